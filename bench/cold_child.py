"""One cold start, run as a script in a fresh interpreter: ``python bench/cold_child.py MODE [KIND]``.

Modes:

* ``floor``: ``import flask, awsgi`` and nothing else;
* ``handler``: ``import handler`` and serve ``events/route.json`` (the seed's haiku) once, with
  whatever configuration the environment holds (built-in registry, or SSM and Secrets Manager);
* ``aws``: where an AWS-configured cold start spends its time: ``import boto3``, each client's
  creation and its first call (to the endpoint in ``AWS_ENDPOINT_URL``);
* ``first-call KIND`` (``mock``, ``openai``, ``anthropic``, ``bedrock``): ``import handler``, build
  the app, and serve one ``/route`` (the body in ``BENCH_ROUTE_BODY``) routed to the registry's one
  model (``MODELS_CONFIG_JSON``), whose upstream is a local fake. The adapter's own steps are timed
  in place by wrapping its methods: ``import`` of the SDK (done by the wrapper just before the
  adapter's own, now free, import), the client's creation (for Bedrock: the boto3 ``Session``, then
  the client) and the call itself (translation, the HTTP exchange, reading the answer). Then a
  warm request (the same client), and for Bedrock one with less time left (12 s, as late in an
  invocation), whose whole-second timeout needs a second client of the same Session.

It prints one JSON line: milliseconds since the script started (after the interpreter's own
start-up), the peak resident memory of this process (``VmHWM``; ``ru_maxrss`` from
``resource.getrusage`` beside it), and which heavy packages got imported.
Imports stay inside the timed blocks and the script itself imports only what the interpreter has
loaded already, so the figures are the modes' own cost.

Its stdout (file descriptor 1) points at /dev/null from the first line on: the service's line per
request (EMF or a log line) is written there, as to a Lambda function's stdout, and the result
line goes to a duplicate of the original descriptor, the only thing the parent reads.
"""

import os
import sys
import time

_started = time.perf_counter()
_result_fd = os.dup(1)
_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 1)
os.close(_devnull)
TYPE_CHECKING = False  # typing is not imported at run time: it is not loaded yet
if TYPE_CHECKING:
    from typing import Any
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT  # the project root (for handler.py), not bench/
HEAVY = ("openai", "anthropic", "httpx", "httpx2", "boto3", "botocore", "prometheus_client", "pydantic", "flask",
         "werkzeug", "jinja2", "awsgi")
SDK = {"openai": "openai", "anthropic": "anthropic", "bedrock": "boto3"}


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


class _Context:
    """The parts of the Lambda context the handler reads."""

    function_name = "bench-cold"
    aws_request_id = "bench-cold"

    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _instrument(kind: str) -> "dict[str, list[float]]":
    """Wrap the adapter's methods so each step of a call is timed in place; lists, one entry per occurrence."""
    import importlib
    from typing import Any

    times: dict[str, list[float]] = {"import_sdk_ms": [], "session_ms": [], "client_ms": [], "complete_ms": []}

    def patch(cls: Any, wrappers: "dict[str, Any]") -> None:
        for name, wrap in wrappers.items():
            setattr(cls, name, wrap(vars(cls)[name]))

    if kind in ("openai", "anthropic"):
        module = importlib.import_module(f"costroute.providers.{kind}")

        def timed_make(make: Any) -> Any:
            def wrapper(self: Any, key: str | None) -> Any:
                began = time.perf_counter()
                importlib.import_module(SDK[kind])  # the adapter's own deferred import, done here to time it apart
                times["import_sdk_ms"].append(_ms(began))
                began = time.perf_counter()
                client = make(self, key)
                times["client_ms"].append(_ms(began))
                return client

            return wrapper

        def timed_once(once: Any) -> Any:
            def wrapper(self: Any, key: str | None, model: Any, call: Any) -> Any:
                began = time.perf_counter()
                try:
                    return once(self, key, model, call)
                finally:
                    times["complete_ms"].append(_ms(began))

            return wrapper

        adapter = module.OpenAIProvider if kind == "openai" else module.AnthropicProvider
        patch(adapter, {"_make_client": timed_make, "_complete_once": timed_once})
    elif kind == "bedrock":
        from costroute.providers import bedrock

        def timed_session(get_session: Any) -> Any:
            def wrapper(self: Any) -> Any:
                if self._session is not None:
                    return get_session(self)
                began = time.perf_counter()
                importlib.import_module("boto3")  # the adapter's own deferred import, done here to time it apart
                times["import_sdk_ms"].append(_ms(began))
                began = time.perf_counter()
                session = get_session(self)
                times["session_ms"].append(_ms(began))
                return session

            return wrapper

        def timed_for_timeout(for_timeout: Any) -> Any:
            def wrapper(self: Any, timeout_s: float) -> Any:
                new = self._session is None or max(1, -int(-timeout_s // 1)) not in self._clients
                before = sum(times["import_sdk_ms"]) + sum(times["session_ms"])
                began = time.perf_counter()
                client = for_timeout(self, timeout_s)
                if new:
                    inside = sum(times["import_sdk_ms"]) + sum(times["session_ms"]) - before
                    times["client_ms"].append(round(_ms(began) - inside, 2))
                return client

            return wrapper

        def timed_complete(complete: Any) -> Any:
            def wrapper(self: Any, model: Any, call: Any) -> Any:
                began = time.perf_counter()
                try:
                    return complete(self, model, call)
                finally:
                    times["complete_ms"].append(_ms(began))

            return wrapper

        patch(bedrock.BedrockClients, {"_get_session": timed_session, "for_timeout": timed_for_timeout})
        patch(bedrock.BedrockProvider, {"complete": timed_complete})
    return times


def _first_call(kind: str, result: "dict[str, Any]") -> None:
    import handler

    result["import_ms"] = _ms(_started)
    import json

    began = time.perf_counter()
    times = _instrument(kind)
    handler._application()
    result["app_build_ms"] = _ms(began)
    with open(os.path.join(ROOT, "events", "route.json"), encoding="utf-8") as file:
        event = json.load(file)
    event["body"] = os.environ["BENCH_ROUTE_BODY"]

    def invoke(request_id: str, remaining_ms: int = 30_000) -> float:
        event["requestContext"]["requestId"] = request_id
        began = time.perf_counter()
        response = handler.lambda_handler(event, _Context(remaining_ms))
        elapsed = _ms(began)
        if response["statusCode"] != 200:
            raise SystemExit(f"first-call {kind}: {request_id} answered {response['statusCode']}: "
                             f"{response['body'][:800]}")
        body = json.loads(response["body"])
        result.setdefault("models", []).append(body.get("model"))
        return elapsed

    result["first_request_ms"] = invoke("first")
    result["cold_ms"] = _ms(_started)  # from the start to the first answer
    result["warm_request_ms"] = invoke("warm")
    if kind == "bedrock":
        result["second_client_request_ms"] = invoke("late", remaining_ms=12_000)
    for name, values in times.items():
        if not values:
            continue
        result[name] = values[0]
        if name == "complete_ms" and len(values) > 1:
            result["warm_complete_ms"] = values[1]
    if kind in SDK:
        # The call itself: the adapter's whole call less what the SDK import and the client took inside it.
        inside = result["import_sdk_ms"] + result["client_ms"] + result.get("session_ms", 0.0)
        result["call_ms"] = round(result["complete_ms"] - inside, 2)
        result["router_ms"] = round(result["first_request_ms"] - result["complete_ms"], 2)
    if kind == "bedrock":
        result["second_client_ms"] = times["client_ms"][1]
        result["second_client_call_ms"] = round(times["complete_ms"][2] - times["client_ms"][1], 2)
        result["clients"] = len(times["client_ms"])


def main(mode: str) -> "dict[str, Any]":
    result: dict[str, Any] = {"mode": mode}
    if mode == "floor":
        import awsgi  # noqa: F401
        import flask  # noqa: F401

        result["import_ms"] = _ms(_started)
    elif mode == "handler":
        import handler

        result["import_ms"] = _ms(_started)
        import json

        with open(os.path.join(ROOT, "events", "route.json"), encoding="utf-8") as file:
            event = json.load(file)
        began = time.perf_counter()
        response = handler.lambda_handler(event, handler.LocalContext())
        result["first_request_ms"] = _ms(began)
        result["status"] = response["statusCode"]
        if response["statusCode"] != 200:
            result["body"] = response["body"][:500]
    elif mode == "aws":
        began = time.perf_counter()
        import boto3

        result["import_boto3_ms"] = _ms(began)
        parameter = os.environ["MODELS_CONFIG_SSM_PARAMETER"]
        secret = os.environ["OPENAI_API_KEY_SECRET_ID"]
        began = time.perf_counter()
        ssm = boto3.client("ssm")
        result["ssm_client_ms"] = _ms(began)
        began = time.perf_counter()
        ssm.get_parameter(Name=parameter, WithDecryption=True)
        result["ssm_first_call_ms"] = _ms(began)
        began = time.perf_counter()
        secrets = boto3.client("secretsmanager")
        result["secrets_client_ms"] = _ms(began)
        began = time.perf_counter()
        secrets.get_secret_value(SecretId=secret)
        result["secrets_first_call_ms"] = _ms(began)
    elif mode == "first-call":
        result["kind"] = sys.argv[2]
        _first_call(sys.argv[2], result)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    result["total_ms"] = _ms(_started)
    import resource

    # ru_maxrss survives execve on Linux: a child of a large parent reports the parent's peak. The
    # kernel's high-water mark of this process's own memory (VmHWM) starts afresh at exec.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    result["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)
    result["max_rss_mb"] = result["ru_maxrss_mb"]
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    result["max_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    result["heavy_imported"] = sorted(name for name in HEAVY if name in sys.modules)
    return result


if __name__ == "__main__":
    import json as _json

    _line = (_json.dumps(main(sys.argv[1])) + "\n").encode()
    sys.stdout.flush()
    while _line:
        _line = _line[os.write(_result_fd, _line):]
