"""Figures 4 and 5: cold starts in fresh interpreters, and what a mock-only cold start imports.

Each run is ``python bench/cold_child.py MODE`` (see that file). Runs of the modes alternate so
that drift in the machine's speed hits them alike; the figure is the median.

Bytecode: every child reads and writes compiled modules in one private cache directory
(``PYTHONPYCACHEPREFIX``, filled by a warm-up run of each mode), so the figures are those of an
installation with its ``.pyc`` files, whatever the caller's ``PYTHONDONTWRITEBYTECODE``. The
"no bytecode" variant points every run at an empty cache it may not write, so each module is
compiled from source on every start, as happens on Lambda when the artifact ships without
``.pyc`` files (``/var/task`` is read-only, so Python cannot cache them there either).

The AWS variant reads the registry from SSM Parameter Store and names the OpenAI key's secret in
Secrets Manager, both served by moto in server mode on 127.0.0.1 (warmed up first: moto loads
each service on its first call, about a second).

Every child runs with ``LOG_FORMAT=emf``, Lambda's default: the first request's EMF line is
formatted and written, to /dev/null (``cold_child.py`` points its stdout there), so the cold start
includes what the line costs on Lambda without a terminal or a pipe in the way.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from bench.common import PYTHON, ROOT, clean_env, run_child_json

CHILD = str(ROOT / "bench" / "cold_child.py")
PARAMETER = "/costroute/bench/models"
SECRET = "costroute/bench/openai"
IMPORT_THRESHOLD_MS = 5.0
# Packages a mock cold start must not import: the SDKs (loaded on a provider's first call) and
# prometheus_client (make serve's /metrics only).
FORBIDDEN_IMPORTS = ("openai", "anthropic", "boto3", "botocore", "prometheus_client")


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(run[key] for run in runs)), 2)


def _summary(runs: list[dict[str, Any]], wall_ms: list[float]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "runs": len(runs),
        "total_ms": _median_of(runs, "total_ms"),
        "total_ms_all": sorted(run["total_ms"] for run in runs),
        "process_wall_ms": round(statistics.median(wall_ms), 2),
        "max_rss_mb": max(run["max_rss_mb"] for run in runs),
        "ru_maxrss_mb": max(run["ru_maxrss_mb"] for run in runs),
        "heavy_imported": runs[-1]["heavy_imported"],
    }
    for key in ("import_ms", "first_request_ms"):
        if key in runs[0]:
            summary[key] = _median_of(runs, key)
    return summary


def _child(mode: str, env: dict[str, str], extra_args: tuple[str, ...] = ()) -> tuple[dict[str, Any], float]:
    began = time.perf_counter()
    result = run_child_json([*extra_args, CHILD, mode], env)
    wall = (time.perf_counter() - began) * 1000
    if mode == "handler" and result.get("status") != 200:
        raise RuntimeError(f"cold start answered {result.get('status')}: {result.get('body')}")
    return result, wall


def _measure(modes: dict[str, tuple[str, dict[str, str]]], runs: int, warm: bool = True) -> dict[str, Any]:
    """Alternate the modes ``runs`` times (after one warm-up each); a summary per name."""
    if warm:
        for mode, env in modes.values():
            _child(mode, env)
    collected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    walls: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for name, (mode, env) in modes.items():
            result, wall = _child(mode, env)
            collected[name].append(result)
            walls[name].append(wall)
    return {name: _summary(collected[name], walls[name]) for name in modes}


def _start_moto() -> tuple[Any, str]:
    """A moto server on loopback holding the registry parameter and the key's secret."""
    import logging

    from moto.server import ThreadedMotoServer

    # moto's werkzeug server logs every request; the table is what the reader came for.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _seed_moto(endpoint: str) -> None:
    import boto3

    from costroute.core.registry import default_registry_json

    options = {"endpoint_url": endpoint, "region_name": "us-east-1",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    ssm = boto3.client("ssm", **options)
    ssm.put_parameter(Name=PARAMETER, Value=default_registry_json(), Type="String", Overwrite=True)
    secrets = boto3.client("secretsmanager", **options)
    try:
        secrets.create_secret(Name=SECRET, SecretString=json.dumps({"OPENAI_API_KEY": "sk-bench-not-a-real-key"}))
    except secrets.exceptions.ResourceExistsException:
        pass
    # Both services are now loaded in moto: children do not pay moto's own first-call cost.
    ssm.get_parameter(Name=PARAMETER, WithDecryption=True)
    secrets.get_secret_value(SecretId=SECRET)


def import_profile(env: dict[str, str], runs: int = 3) -> dict[str, Any]:
    """``-X importtime`` of a mock cold start: self time summed per top-level package, median of runs."""
    per_run: list[dict[str, float]] = []
    counts: dict[str, int] = {}
    for _ in range(runs):
        result = run_child_json(["-X", "importtime", CHILD, "handler"], env)
        totals: dict[str, float] = defaultdict(float)
        modules: dict[str, int] = defaultdict(int)
        for line in result["_stderr"].splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            head, _cumulative, name = line.split("|")
            root = name.strip().split(".")[0]
            totals[root] += int(head.split(":")[1]) / 1000
            modules[root] += 1
        per_run.append(totals)
        counts = modules
    roots = sorted({root for totals in per_run for root in totals})
    median = {root: round(statistics.median(t.get(root, 0.0) for t in per_run), 2) for root in roots}
    heavy = sorted(((ms, root) for root, ms in median.items() if ms >= IMPORT_THRESHOLD_MS), reverse=True)
    forbidden = sorted(root for root in roots if root in FORBIDDEN_IMPORTS)
    return {
        "threshold_ms": IMPORT_THRESHOLD_MS,
        "packages_over_threshold": [{"package": root, "self_ms": ms, "modules": counts.get(root, 0)} for ms, root in heavy],
        "total_import_ms": round(sum(median.values()), 2),
        "packages_imported": len(roots),
        "forbidden_imported": forbidden,
        "forbidden_checked": list(FORBIDDEN_IMPORTS),
    }


def run(quick: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    runs = 3 if quick else 9
    cache = tempfile.TemporaryDirectory(prefix="costroute-bench-pyc-")
    empty = tempfile.TemporaryDirectory(prefix="costroute-bench-nopyc-")
    base = clean_env({"PYTHONPYCACHEPREFIX": cache.name, "LOG_FORMAT": "emf"})
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # the private cache must fill, whatever the caller's setting
    no_bytecode = clean_env({"PYTHONPYCACHEPREFIX": empty.name, "PYTHONDONTWRITEBYTECODE": "1", "LOG_FORMAT": "emf"})
    results: dict[str, Any] = {"python": PYTHON}
    server = None
    try:
        print("bench: cold start, mock", file=log)
        results.update(_measure({"floor": ("floor", base), "mock": ("handler", base)}, runs))
        print("bench: cold start, SSM + Secrets Manager (moto server on loopback)", file=log)
        server, endpoint = _start_moto()
        _seed_moto(endpoint)
        aws = clean_env({
            "PYTHONPYCACHEPREFIX": cache.name,
            "LOG_FORMAT": "emf",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MODELS_CONFIG_SSM_PARAMETER": PARAMETER,
            "OPENAI_API_KEY_SECRET_ID": SECRET,
        })
        aws.pop("PYTHONDONTWRITEBYTECODE", None)
        results["aws"] = _measure({"aws": ("handler", aws)}, runs)["aws"]
        breakdown_runs = [run_child_json([CHILD, "aws"], aws) for _ in range(3 if quick else 5)]
        results["aws_breakdown"] = {
            key: _median_of(breakdown_runs, key)
            for key in ("import_boto3_ms", "ssm_client_ms", "ssm_first_call_ms", "secrets_client_ms",
                        "secrets_first_call_ms", "total_ms")
        }
        print("bench: cold start without bytecode caches", file=log)
        nopyc = _measure({"floor": ("floor", no_bytecode), "mock": ("handler", no_bytecode)},
                         3 if quick else 7, warm=False)
        results["no_bytecode"] = nopyc
        print("bench: imports of a mock cold start (-X importtime)", file=log)
        results["imports"] = import_profile(base, runs=1 if quick else 3)
    finally:
        if server is not None:
            server.stop()
        cache.cleanup()
        empty.cleanup()
    results["ratio_mock"] = round(results["mock"]["total_ms"] / results["floor"]["total_ms"], 2)
    results["ratio_aws"] = round(results["aws"]["total_ms"] / results["floor"]["total_ms"], 2)
    results["ratio_no_bytecode"] = round(
        results["no_bytecode"]["mock"]["total_ms"] / results["no_bytecode"]["floor"]["total_ms"], 2
    )
    return results
