"""Figure 3: HTTP on loopback, gunicorn with ``gunicorn.conf.py``, load from wrk.

Each server is started exactly as ``make serve`` starts it (``gunicorn -c gunicorn.conf.py``),
on a free port of 127.0.0.1, and stopped with SIGTERM to the master it started:

* ours (``costroute.wsgi:app``) and the floor (``bench.floor_app:app``), each with the default
  worker class (gthread) and with ``GUNICORN_WORKER_CLASS=sync``, at concurrency 1 and 16,
  POST /route with the seed's haiku body (mock provider, instant). The four servers run at once
  (idle workers cost no CPU) and are measured in turn, A B C D D C B A, so that a change in the
  machine's load during the run hits each of them alike;
* ours at concurrency 16 with a registry whose mock models wait 100 ms (``mock_delay_ms``), like
  a fast real model: what a worker class does when calls are IO-bound.

Figures 7 and 9 use the same servers and load, two servers of ours at a time (gthread), measured
A B B A A B B A per concurrency, 2 s each run: with and without ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory of its
own, as ``make serve`` gives; Prometheus metrics on, ``GET /metrics`` served), and with and
without budgets (``BUDGETS_CONFIG_JSON``, a generous daily limit for every caller, and a fresh
SQLite file at ``SPEND_DB_PATH`` shared by the workers, as ``make serve`` would use).

Every server's stdout, where the service writes its line per request (the readable line, the
default outside Lambda), goes to /dev/null; gunicorn's own log (stderr) goes to a file that is
kept, and named, only when a run fails.

wrk is installed with ``apt-get install -y wrk`` when it is missing (the one network access of
the benchmarks, as root only); without it this figure is skipped, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import ROOT, clean_env, haiku_json, loadavg

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
LUA = str(ROOT / "bench" / "post.lua")
OURS = "costroute.wsgi:app"
FLOOR = "bench.floor_app:app"
# The built-in tiers as objects, each answering after a real 100 ms wait.
SLOW_REGISTRY = json.dumps(
    [
        {"provider": "mock", "name": name, "quality": q, "in_cost_per_1k": i, "out_cost_per_1k": o,
         "latency_ms": lat, "max_output_tokens": mx, "mock_delay_ms": 100}
        for name, q, i, o, lat, mx in (
            ("basic", 1, 0.0001, 0.0002, 150, 1024),
            ("standard", 2, 0.0005, 0.0015, 300, 2048),
            ("advanced", 4, 0.0025, 0.006, 500, 4096),
            ("premium", 5, 0.01, 0.03, 1500, 8192),
        )
    ]
)


def ensure_wrk(log: Any = sys.stderr) -> str | None:
    """The path of wrk, installing it with apt-get when missing and allowed; None if unavailable."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("bench: wrk is missing and cannot be installed here (needs root and apt-get)", file=log)
        return None
    print("bench: installing wrk with apt-get (the benchmarks' only network access)", file=log)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    for attempt in ([install], [["apt-get", "update", "-q"], install]):
        if all(subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0 for cmd in attempt):
            break
    return shutil.which("wrk")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _worker_rss_mb(master_pid: int) -> list[float]:
    """Resident memory of each worker (children of the master), in MB."""
    sizes: list[float] = []
    if not Path("/proc").is_dir():
        return sizes
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master_pid) and "VmRSS" in fields:
            sizes.append(round(int(fields["VmRSS"].split()[0]) / 1024, 1))
    return sorted(sizes)


@contextmanager
def gunicorn(app: str, env_extra: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """Serve ``app`` with gunicorn.conf.py on a free loopback port; yield (base URL, master pid).

    stdout (the request lines) goes to /dev/null, stderr (gunicorn's own log) to ``log_path``.
    """
    port = free_port()
    env = clean_env({"PORT": str(port), "HOST": "127.0.0.1", **env_extra})
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), app],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn for {app} exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn for {app} did not answer /health within 20 s; see {log_path}")
            time.sleep(0.1)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def wrk(wrk_path: str, url: str, body_file: str, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run; requests/s, latency percentiles (µs) and error counts."""
    threads = 1 if connections == 1 else 2
    command = [wrk_path, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s",
               "-s", LUA, url, "--", body_file]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((text for text in completed.stdout.splitlines() if text.startswith("WRK_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stdout[-800:]} {completed.stderr[-800:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    errors = sum(value for key, value in raw.items() if key.startswith("errors_"))
    return {
        "connections": connections,
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "requests": raw["requests"],
        "errors": errors,
        "error_detail": {k: v for k, v in raw.items() if k.startswith("errors_") and v},
    }


def _merge(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from several wrk runs: requests/s over their whole time, percentiles averaged."""
    seconds = sum(segment["requests"] / segment["rps"] for segment in segments if segment["rps"])
    merged: dict[str, Any] = {
        "connections": segments[0]["connections"],
        "rps": round(sum(segment["requests"] for segment in segments) / seconds, 1) if seconds else 0.0,
        "requests": sum(segment["requests"] for segment in segments),
        "errors": sum(segment["errors"] for segment in segments),
        "segments_rps": [segment["rps"] for segment in segments],
    }
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        merged[key] = round(sum(segment[key] for segment in segments) / len(segments), 3)
    return merged


def run(quick: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    """Every server up at once, measured in an ABBA order so drift in the machine's load hits all alike."""
    wrk_path = ensure_wrk(log)
    if wrk_path is None:
        return {"skipped": "wrk is not available"}
    segment = 1 if quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="costroute-bench-"))
    body_file = workdir / "haiku.json"
    body_file.write_text(haiku_json())
    log_path = workdir / "gunicorn.log"
    results: dict[str, Any] = {
        "seconds_per_segment": segment,
        "method": "4 servers up at once; per concurrency, wrk runs of each in the order A B C D D C B A; "
                  "requests/s over both runs, percentiles the mean of the two",
        "runs": {},
    }
    classes = {"gthread": {}, "sync": {"GUNICORN_WORKER_CLASS": "sync"}}
    servers = {f"{name}_{worker_class}": (app, class_env)
               for worker_class, class_env in classes.items() for name, app in (("ours", OURS), ("floor", FLOOR))}
    failed = False
    try:
        with ExitStack() as stack:
            urls: dict[str, str] = {}
            masters: dict[str, int] = {}
            for key, (app, env) in servers.items():
                base, master = stack.enter_context(gunicorn(app, env, log_path))
                urls[key], masters[key] = base + "/route", master
            for url in urls.values():
                wrk(wrk_path, url, str(body_file), 16, 1)  # warm every worker
            order = list(servers) + list(reversed(servers))
            for connections in (1, 16):
                print(f"bench: http c{connections}: {' '.join(order)}", file=log)
                segments: dict[str, list[dict[str, Any]]] = {key: [] for key in servers}
                for key in order:
                    segments[key].append(wrk(wrk_path, urls[key], str(body_file), connections, segment))
                for key in servers:
                    results["runs"].setdefault(key, {})[f"c{connections}"] = _merge(segments[key])
            for key in servers:
                results["runs"][key]["worker_rss_mb"] = _worker_rss_mb(masters[key])
            results["loadavg"] = loadavg()
        for worker_class, class_env in classes.items():
            key = f"ours_io100ms_{worker_class}"
            print(f"bench: http {key}", file=log)
            with gunicorn(OURS, {**class_env, "MODELS_CONFIG_JSON": SLOW_REGISTRY}, log_path) as (base, _):
                results["runs"][key] = {"c16": wrk(wrk_path, base + "/route", str(body_file), 16, 2 * segment)}
    except Exception:
        failed = True
        print(f"bench: gunicorn's log is kept in {log_path}", file=log)
        raise
    finally:
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    runs = results["runs"]
    for worker_class in classes:
        for c in ("c1", "c16"):
            ours, floor = runs[f"ours_{worker_class}"][c], runs[f"floor_{worker_class}"][c]
            results[f"ratio_rps_{worker_class}_{c}"] = round(ours["rps"] / floor["rps"], 2)
    for c in ("c1", "c16"):
        results[f"gthread_vs_sync_ours_{c}"] = round(runs["ours_gthread"][c]["rps"] / runs["ours_sync"][c]["rps"], 2)
        results[f"gthread_vs_sync_floor_{c}"] = round(runs["floor_gthread"][c]["rps"] / runs["floor_sync"][c]["rps"], 2)
    results["gthread_vs_sync_io100ms_c16"] = round(
        runs["ours_io100ms_gthread"]["c16"]["rps"] / runs["ours_io100ms_sync"]["c16"]["rps"], 2
    )
    return results


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _pair(
    figure: str,
    servers: dict[str, dict[str, str]],
    quick: bool,
    log: Any,
    check: Any = None,
) -> dict[str, Any]:
    """Two servers of ours (gthread) up at once, measured A B B A A B B A at c1 and c16 (figure 3's method, 4 x 2 s).

    ``servers`` maps a name to the server's extra environment; ``check(urls)`` runs after the
    load, while the servers are still up. Requests/s, latency and µs per request (1 / throughput).
    """
    wrk_path = ensure_wrk(log)
    if wrk_path is None:
        return {"skipped": "wrk is not available"}
    segment = 1 if quick else 2
    workdir = Path(tempfile.mkdtemp(prefix=f"costroute-bench-{figure}-"))
    body_file = workdir / "haiku.json"
    body_file.write_text(haiku_json())
    log_path = workdir / "gunicorn.log"
    results: dict[str, Any] = {
        "seconds_per_segment": segment,
        "method": "servers up at once; per concurrency, wrk runs in the order A B B A A B B A; requests/s over the "
                  "four runs of each, percentiles their mean; us_per_request = 1e6 / requests/s",
        "runs": {},
    }
    failed = False
    try:
        with ExitStack() as stack:
            urls: dict[str, str] = {}
            for key, env in servers.items():
                base, _master = stack.enter_context(gunicorn(OURS, env, log_path))
                urls[key] = base
            for url in urls.values():
                wrk(wrk_path, url + "/route", str(body_file), 16, 1)  # warm every worker
            order = (list(servers) + list(reversed(servers))) * 2
            for connections in (1, 16):
                print(f"bench: {figure} http c{connections}: {' '.join(order)}", file=log)
                segments: dict[str, list[dict[str, Any]]] = {key: [] for key in servers}
                for key in order:
                    segments[key].append(wrk(wrk_path, urls[key] + "/route", str(body_file), connections, segment))
                for key in servers:
                    merged = _merge(segments[key])
                    merged["us_per_request"] = round(1e6 / merged["rps"], 1) if merged["rps"] else None
                    results["runs"].setdefault(key, {})[f"c{connections}"] = merged
            if check is not None:
                results["check"] = check(urls)
            results["loadavg"] = loadavg()
    except Exception:
        failed = True
        print(f"bench: gunicorn's log is kept in {log_path}", file=log)
        raise
    finally:
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def _difference(results: dict[str, Any], on: str, off: str) -> None:
    """Per concurrency: requests/s ratio and µs per request added, ``on`` against ``off``."""
    runs = results.get("runs")
    if not runs:
        return
    for c in ("c1", "c16"):
        a, b = runs[on][c], runs[off][c]
        results[f"ratio_rps_{c}"] = round(a["rps"] / b["rps"], 3)
        results[f"added_us_per_request_{c}"] = round(a["us_per_request"] - b["us_per_request"], 1)
        results[f"added_p50_ms_{c}"] = round(a["p50_ms"] - b["p50_ms"], 3)


def run_metrics(quick: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    """Figure 7 over HTTP: Prometheus metrics on (``PROMETHEUS_MULTIPROC_DIR``) and off."""
    directory = tempfile.TemporaryDirectory(prefix="costroute-bench-prometheus-")

    def check(urls: dict[str, str]) -> dict[str, Any]:
        on_status, on_body = _get(urls["metrics_on"] + "/metrics")
        off_status, _ = _get(urls["metrics_off"] + "/metrics")
        counted = 0.0
        for line in on_body.decode("utf-8", "replace").splitlines():
            if line.startswith("costroute_requests_total{"):
                counted += float(line.rsplit(" ", 1)[1])
        if on_status != 200 or off_status != 404 or not counted:
            raise RuntimeError(f"/metrics: {on_status} with metrics on (requests counted: {counted}), "
                               f"{off_status} with metrics off; expected 200 and 404")
        return {"metrics_on_status": on_status, "metrics_off_status": off_status, "requests_counted": counted,
                "multiproc_files": len(list(Path(directory.name).iterdir()))}

    try:
        results = _pair("metrics", {"metrics_on": {"PROMETHEUS_MULTIPROC_DIR": directory.name}, "metrics_off": {}},
                        quick, log, check)
    finally:
        directory.cleanup()
    _difference(results, "metrics_on", "metrics_off")
    return results


BUDGETS_DOCUMENT = json.dumps({"default": {"daily_usd": 1000}})


def run_budgets(quick: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    """Figure 9 over HTTP: budgets on (SQLite, one file for both workers) and off."""
    directory = tempfile.TemporaryDirectory(prefix="costroute-bench-spend-")
    database = str(Path(directory.name) / "spend.sqlite3")

    def check(urls: dict[str, str]) -> dict[str, Any]:
        with urllib.request.urlopen(urllib.request.Request(
                urls["budgets"] + "/route", data=haiku_json().encode(), headers={"Content-Type": "application/json"}),
                timeout=5) as response:
            budget = json.loads(response.read()).get("budget")
        if not budget:
            raise RuntimeError("the server with budgets answered without a budget object")
        return {"budget_remaining_usd": budget.get("remaining_usd"), "database_bytes": Path(database).stat().st_size}

    try:
        results = _pair("budgets", {"budgets": {"BUDGETS_CONFIG_JSON": BUDGETS_DOCUMENT, "SPEND_DB_PATH": database},
                                    "none": {}}, quick, log, check)
    finally:
        directory.cleanup()
    _difference(results, "budgets", "none")
    return results
