-- wrk script for `make bench`: POST a JSON body read from a file, report results as one JSON line.
-- Usage: wrk -s bench/post.lua URL -- BODY_FILE
local body_text = nil

function init(args)
  local file = assert(io.open(args[1], "rb"))
  body_text = file:read("*a")
  file:close()
  request_text = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body_text)
end

function request()
  return request_text
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
