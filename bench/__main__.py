"""``make bench`` (``python -m bench``): every figure beside its floor and target, in one run.

Prints a table on stdout (progress on stderr) and writes ``bench/results/latest.json`` (plus a
timestamped copy) for later comparison. Options:

  --quick          short runs, to check that everything works (figures are not comparable)
  --only 1,3       only these figures (1 selection, 2 Lambda in process, 3 HTTP, 4 cold start
                   and 5 imports, 6 dry run over 1,000 models, 7 the line per request and
                   Prometheus metrics, 8 first calls to OpenAI, Anthropic and Bedrock, 9 budgets)
  --output PATH    where to write the JSON (default bench/results/latest.json; quick.json
                   with --quick, so a smoke run never replaces the last real figures)

Needs no network but loopback, except ``apt-get install -y wrk`` when wrk is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import coldstart, firstcall, loopback, selection
from bench.common import ROOT, clean_env, loadavg, registry_rows, run_child_json

RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("flask", "werkzeug", "aws-wsgi", "gunicorn", "boto3", "moto", "openai", "anthropic",
                    "prometheus-client"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    wrk_version: str | None = None
    try:
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5).stdout.split("\n")[0]
    except OSError:
        pass
    memory_mb = None
    try:
        memory_mb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "wrk": wrk_version,
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty_files": len(git("status", "--porcelain").splitlines())}
    except OSError:
        return {"commit": None}


# In-process children write the service's line per request to /dev/null (bench.common.discard_stdout),
# in Lambda's format: EMF.
LAMBDA_ENV = {"LOG_FORMAT": "emf"}
BUDGETS_DOCUMENT = loopback.BUDGETS_DOCUMENT


def _in_process(figure: str, quick: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    args = ["-m", "bench.inprocess", figure] + (["--quick"] if quick else [])
    result = run_child_json(args, clean_env({**LAMBDA_ENV, **(env or {})}))
    result.pop("_stderr", None)
    return result


def measured_package() -> str | None:
    """Where the measured ``costroute`` package is (another copy when PYTHONPATH names one)."""
    spec = importlib.util.find_spec("costroute")
    return str(Path(spec.origin).parent) if spec is not None and spec.origin else None


def run_lambda(quick: bool) -> dict[str, Any]:
    return _in_process("lambda", quick)


def run_dryrun(quick: bool) -> dict[str, Any]:
    return _in_process("dryrun", quick, {"MODELS_CONFIG_JSON": json.dumps(registry_rows(1000))})


def run_observe(quick: bool, log: Any) -> dict[str, Any]:
    """Figure 7: the line per request in process (by format, and none), Prometheus metrics under gunicorn."""
    print("bench: observers in process (EMF, JSON, readable, none)", file=log)
    return {"in_process": _in_process("observe", quick), "http": loopback.run_metrics(quick, log)}


def run_budgets(quick: bool, log: Any) -> dict[str, Any]:
    """Figure 9: budgets in process (SQLite) and under gunicorn, and DynamoDB calls per request (moto)."""
    print("bench: budgets in process (SQLite), DynamoDB calls per request (moto)", file=log)
    with tempfile.TemporaryDirectory(prefix="costroute-bench-spend-") as directory:
        in_process = _in_process("budgets", quick, {"BUDGETS_CONFIG_JSON": BUDGETS_DOCUMENT,
                                                    "SPEND_DB_PATH": str(Path(directory) / "spend.sqlite3")})
    dynamodb = _in_process("dynamodb", quick, {
        "BUDGETS_CONFIG_JSON": BUDGETS_DOCUMENT, "SPEND_TABLE_NAME": "costroute-bench-spend",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    })
    return {"document": BUDGETS_DOCUMENT, "in_process": in_process, "dynamodb": dynamodb,
            "http": loopback.run_budgets(quick, log)}


# ----------------------------------------------------------------------------------------------
# Targets and the table


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5 with the measured value and whether it holds."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, limit: float, op: str, unit: str = "") -> None:
        holds = value <= limit if op == "<=" else value >= limit
        checks.append({"target": name, "value": value, "limit": limit, "op": op, "unit": unit, "holds": holds})

    sel = results.get("selection")
    if sel:
        check("selection p50, 10 models", sel["sizes"]["10"]["p50_us"], 30, "<=", "µs")
        check("selection p50, 1,000 models", sel["sizes"]["1000"]["p50_us"], 3000, "<=", "µs")
        check("selection growth 100->1,000 (log-log slope; 1 = linear)", sel["growth"]["slope_100_1000"], 1.15, "<=")
    lam = results.get("lambda")
    if lam:
        check("Lambda invocation in process, p50 vs floor", lam["ratio_p50"], 1.5, "<=", "x")
    http = results.get("http")
    if http and "runs" in http:
        check("HTTP c1 requests/s vs floor (gthread)", http["ratio_rps_gthread_c1"], 0.75, ">=", "x")
        check("HTTP c16 requests/s vs floor (gthread)", http["ratio_rps_gthread_c16"], 0.75, ">=", "x")
        errors = sum(run[c]["errors"] for run in http["runs"].values() for c in run if c.startswith("c"))
        check("HTTP errors (timeouts, non-2xx)", errors, 0, "<=")
    cold = results.get("coldstart")
    if cold:
        check("cold start (mock) vs import flask, awsgi", cold["ratio_mock"], 1.25, "<=", "x")
        check("cold start (mock) peak RSS", cold["mock"]["max_rss_mb"], 60, "<=", "MB")
        check(FORBIDDEN_TARGET, len(cold["imports"]["forbidden_imported"]), 0, "<=")
    budgets = results.get("budgets")
    if budgets:
        check(DYNAMODB_TARGET, budgets["dynamodb"]["routed"]["calls_per_request_max"], 2, "<=")
    return checks


FORBIDDEN_TARGET = "mock cold start imports none of openai, anthropic, boto3, botocore, prometheus_client"
DYNAMODB_TARGET = "DynamoDB calls per routed request (hot path)"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The human-readable table: figure, ours, floor, ratio, target."""
    rows: list[tuple[str, str, str, str, str]] = []
    status = {t["target"]: ("ok" if t["holds"] else "MISS") for t in results.get("targets", [])}

    def mark(name: str, text: str) -> str:
        return f"{text} {status[name]}" if name in status else text

    sel = results.get("selection")
    if sel:
        for size in ("10", "100", "1000"):
            s = sel["sizes"][size]
            target = {"10": mark("selection p50, 10 models", "p50 <= 30 µs"),
                      "1000": mark("selection p50, 1,000 models", "p50 <= 3,000 µs")}.get(size, "")
            rows.append((f"1 selection, {int(size):,} models: p50 / p99 µs",
                         f"{_fmt(s['p50_us'])} / {_fmt(s['p99_us'])}", "", f"{s['per_model_us']:.2f} µs/model", target))
        g = sel["growth"]
        rows.append(("1 selection growth x10 models: 10->100, 100->1,000",
                     f"x{g['x10_to_x100']} / x{g['x100_to_x1000']}", "", f"slope {g['slope_100_1000']}",
                     mark("selection growth 100->1,000 (log-log slope; 1 = linear)", "linear (slope <= 1.15)")))
    lam = results.get("lambda")
    if lam:
        rows.append(("2 Lambda invocation in process: p50 / p99 µs",
                     f"{_fmt(lam['ours']['p50_us'])} / {_fmt(lam['ours']['p99_us'])}",
                     f"{_fmt(lam['floor']['p50_us'])} / {_fmt(lam['floor']['p99_us'])}",
                     f"x{lam['ratio_p50']} / x{lam['ratio_p99']}",
                     mark("Lambda invocation in process, p50 vs floor", "<= x1.5")))
    http = results.get("http")
    if http and "runs" in http:
        runs = http["runs"]
        for worker_class in ("gthread", "sync"):
            for c in ("c1", "c16"):
                ours, floor = runs[f"ours_{worker_class}"][c], runs[f"floor_{worker_class}"][c]
                target = ""
                if worker_class == "gthread":
                    target = mark(f"HTTP {c} requests/s vs floor (gthread)", ">= x0.75")
                rows.append((f"3 HTTP {worker_class} {c}: req/s, p50 / p99 ms",
                             f"{_fmt(ours['rps'])}, {_fmt(ours['p50_ms'], 2)} / {_fmt(ours['p99_ms'], 2)}",
                             f"{_fmt(floor['rps'])}, {_fmt(floor['p50_ms'], 2)} / {_fmt(floor['p99_ms'], 2)}",
                             f"x{http[f'ratio_rps_{worker_class}_{c}']}", target))
        rows.append(("3 gthread vs sync: req/s ratio c1 / c16", f"x{http['gthread_vs_sync_ours_c1']} / "
                     f"x{http['gthread_vs_sync_ours_c16']}", f"x{http['gthread_vs_sync_floor_c1']} / "
                     f"x{http['gthread_vs_sync_floor_c16']}", "", ""))
        io_g, io_s = runs["ours_io100ms_gthread"]["c16"], runs["ours_io100ms_sync"]["c16"]
        rows.append(("3 100 ms mock calls, c16: req/s, p50 ms (gthread | sync)",
                     f"{_fmt(io_g['rps'])}, {_fmt(io_g['p50_ms'])}", f"sync {_fmt(io_s['rps'])}, {_fmt(io_s['p50_ms'])}",
                     f"x{http['gthread_vs_sync_io100ms_c16']}", ""))
        rss = runs["ours_gthread"]["worker_rss_mb"]
        rows.append(("3 RSS per gthread worker after the runs, MB", "/".join(_fmt(x) for x in rss),
                     "/".join(_fmt(x) for x in runs["floor_gthread"]["worker_rss_mb"]), "", ""))
    elif http:
        rows.append(("3 HTTP", "skipped", "", "", http.get("skipped", "")))
    cold = results.get("coldstart")
    if cold:
        rows.append(("4 cold start, mock: ms (import + first /route)", _fmt(cold["mock"]["total_ms"]),
                     _fmt(cold["floor"]["total_ms"]), f"x{cold['ratio_mock']}",
                     mark("cold start (mock) vs import flask, awsgi", "<= x1.25")))
        rows.append(("4 cold start, mock: peak RSS MB", _fmt(cold["mock"]["max_rss_mb"]),
                     _fmt(cold["floor"]["max_rss_mb"]), "", mark("cold start (mock) peak RSS", "<= 60 MB")))
        rows.append(("4 cold start, SSM + Secrets Manager: ms, peak RSS MB",
                     f"{_fmt(cold['aws']['total_ms'])}, {_fmt(cold['aws']['max_rss_mb'])} MB",
                     _fmt(cold["floor"]["total_ms"]), f"x{cold['ratio_aws']}", "reported"))
        b = cold["aws_breakdown"]
        rows.append(("4 where AWS time goes: import boto3 / ssm client / get_parameter",
                     f"{_fmt(b['import_boto3_ms'])} / {_fmt(b['ssm_client_ms'])} / {_fmt(b['ssm_first_call_ms'])} ms",
                     "", "", ""))
        rows.append(("4   secretsmanager client / get_secret_value (key fetched lazily)",
                     f"{_fmt(b['secrets_client_ms'])} / {_fmt(b['secrets_first_call_ms'])} ms", "", "", ""))
        nb = cold["no_bytecode"]
        rows.append(("4 cold start without .pyc (artifact built --no-compile): ms",
                     _fmt(nb["mock"]["total_ms"]), _fmt(nb["floor"]["total_ms"]), f"x{cold['ratio_no_bytecode']}", ""))
        imports = cold["imports"]
        listed = ", ".join(f"{p['package']} {p['self_ms']:.0f}" for p in imports["packages_over_threshold"])
        forbidden = ", ".join(imports["forbidden_imported"]) or "none"
        rows.append((f"5 imports >= {imports['threshold_ms']:g} ms (self time, ms)", listed, "", "",
                     mark(FORBIDDEN_TARGET, f"SDKs, prometheus_client: {forbidden}")))
    dry = results.get("dryrun")
    if dry:
        for name, label in (("all_candidates", "all candidates"), ("max_candidates_5", "max_candidates 5")):
            d = dry[name]
            rows.append((f"6 dry run, 1,000 models, {label}: p50 µs, bytes",
                         f"{_fmt(d['p50_us'])}, {d['response_bytes']:,} B", "", "", ""))
    rows += observe_rows(results.get("observe"))
    rows += first_call_rows(results.get("first_call"))
    rows += budgets_rows(results.get("budgets"), mark)
    headers = ("figure", "ours", "floor", "ratio", "target")
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(5)] if rows else [10] * 5
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


Row = tuple[str, str, str, str, str]


def _signed(value: float, unit: str = " µs") -> str:
    return f"{'+' if value >= 0 else '-'}{_fmt(abs(float(value)))}{unit}"


def _http_rows(label: str, http: dict[str, Any] | None, on: str, off: str, off_label: str) -> list[Row]:
    """One row per concurrency: ``on`` in the ours column, ``off`` in the floor column."""
    if not http:
        return []
    if "runs" not in http:
        return [(label.format(c="c1/c16"), "skipped", "", "", http.get("skipped", ""))]
    rows: list[Row] = []
    for c in ("c1", "c16"):
        a, b = http["runs"][on][c], http["runs"][off][c]
        rows.append((label.format(c=c),
                     f"{_fmt(a['rps'])}, {_fmt(a['p50_ms'], 2)} / {_fmt(a['p99_ms'], 2)}, {_fmt(a['us_per_request'])} µs",
                     f"{off_label} {_fmt(b['rps'])}, {_fmt(b['p50_ms'], 2)} / {_fmt(b['p99_ms'], 2)}, "
                     f"{_fmt(b['us_per_request'])} µs",
                     f"x{http[f'ratio_rps_{c}']}, {_signed(http[f'added_us_per_request_{c}'])}/req", ""))
    return rows


def observe_rows(observe: dict[str, Any] | None) -> list[Row]:
    """Figure 7: the line per request in process, Prometheus under gunicorn."""
    if not observe:
        return []
    rows: list[Row] = []
    ip = observe["in_process"]
    for name, label in (("emf", "EMF (Lambda)"), ("json", "JSON line"), ("readable", "readable line")):
        rows.append((f"7 Lambda in process, {label}: p50 / p99 µs", f"{_fmt(ip[name]['p50_us'])} / {_fmt(ip[name]['p99_us'])}",
                     f"none {_fmt(ip['off']['p50_us'])} / {_fmt(ip['off']['p99_us'])}",
                     f"{_signed(ip['minus_off'][name]['p50_us'])} p50, {_signed(ip['minus_off'][name]['mean_us'])} mean",
                     ""))
    rows += _http_rows("7 HTTP gthread {c}, Prometheus on: req/s, p50 / p99 ms, µs/req", observe.get("http"),
                       "metrics_on", "metrics_off", "off")
    return rows


def first_call_rows(first: dict[str, Any] | None) -> list[Row]:
    """Figure 8: the first call to each kind of provider in a fresh interpreter."""
    if not first:
        return []
    kinds = [kind for kind in firstcall.KINDS if kind in first]
    rows: list[Row] = [(f"8 cold start to the first answer, ms ({' / '.join(kinds)})",
                        " / ".join(_fmt(first[kind]["cold_ms"]) for kind in kinds), "", "", ""),
                       (f"8   peak RSS MB ({' / '.join(kinds)})",
                        " / ".join(_fmt(first[kind]["max_rss_mb"]) for kind in kinds), "", "", "")]
    sdk = {"openai": "import openai", "anthropic": "import anthropic", "bedrock": "import boto3"}
    for kind in kinds:
        k = first[kind]
        steps = [f"import app {_fmt(k['import_ms'])}", f"build {_fmt(k['app_build_ms'])}"]
        if kind in sdk:
            steps.append(f"{sdk[kind]} {_fmt(k['import_sdk_ms'])}")
            if "session_ms" in k:
                steps.append(f"Session {_fmt(k['session_ms'])}")
            steps += [f"client {_fmt(k['client_ms'])}", f"call {_fmt(k['call_ms'])}", f"rest {_fmt(k['router_ms'])}"]
        else:
            steps.append(f"first /route {_fmt(k['first_request_ms'])}")
        extra = _signed(k["cold_minus_mock_ms"], " ms") + " vs mock" if "cold_minus_mock_ms" in k else ""
        rows.append((f"8 {kind}: where the first answer's ms go", ", ".join(steps), "",
                     extra, f"warm request {_fmt(k['warm_request_ms'], 2)} ms"))
    if "bedrock" in first and "second_client_ms" in first["bedrock"]:
        b = first["bedrock"]
        rows.append(("8 bedrock: 2nd client, same Session (12 s left) / its call / request ms",
                     f"{_fmt(b['second_client_ms'], 2)} / {_fmt(b['second_client_call_ms'], 2)} / "
                     f"{_fmt(b['second_client_request_ms'], 2)}", "", "", ""))
    return rows


def budgets_rows(budgets: dict[str, Any] | None, mark: Any) -> list[Row]:
    """Figure 9: budgets in process and under gunicorn, DynamoDB calls per request."""
    if not budgets:
        return []
    ip = budgets["in_process"]
    rows: list[Row] = [("9 Lambda in process, budgets (SQLite): p50 / p99 µs",
                        f"{_fmt(ip['budgets']['p50_us'])} / {_fmt(ip['budgets']['p99_us'])}",
                        f"none {_fmt(ip['none']['p50_us'])} / {_fmt(ip['none']['p99_us'])}",
                        f"{_signed(ip['minus_none']['p50_us'])} p50, {_signed(ip['minus_none']['mean_us'])} mean", "")]
    rows += _http_rows("9 HTTP gthread {c}, budgets (SQLite): req/s, p50 / p99 ms, µs/req", budgets.get("http"),
                       "budgets", "none", "none")
    for name, label in (("routed", "routed request"), ("dry_run", "dry run")):
        d = budgets["dynamodb"][name]
        calls = ", ".join(f"{operation} {count:g}" for operation, count in d["per_request"].items())
        target = mark(DYNAMODB_TARGET, "<= 2") if name == "routed" else "reported apart"
        rows.append((f"9 DynamoDB calls per {label} (moto, {d['requests']} requests)",
                     f"{calls} (max {d['calls_per_request_max']})", "", "", target))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, not figures")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9", help="comma-separated figure numbers")
    parser.add_argument("--output", type=Path, default=None,
                        help="default bench/results/latest.json (quick.json with --quick)")
    options = parser.parse_args(argv)
    if options.output is None:
        options.output = RESULTS / ("quick.json" if options.quick else "latest.json")
    only = {part.strip() for part in options.only.split(",") if part.strip()}
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": options.quick,
        "machine": machine(),
        "git": git_state(),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "costroute": measured_package(),
        "loadavg_before": loadavg(),
    }
    log = sys.stderr
    steps: tuple[tuple[str, str, Callable[[], dict[str, Any]]], ...] = (
        ("1", "selection", lambda: selection.run(options.quick)),
        ("2", "lambda", lambda: run_lambda(options.quick)),
        ("6", "dryrun", lambda: run_dryrun(options.quick)),
        ("4", "coldstart", lambda: coldstart.run(options.quick, log)),
        ("8", "first_call", lambda: firstcall.run(options.quick, log)),
        ("3", "http", lambda: loopback.run(options.quick, log)),
        ("7", "observe", lambda: run_observe(options.quick, log)),
        ("9", "budgets", lambda: run_budgets(options.quick, log)),
    )
    for number, key, step in steps:
        if number not in only and not (number == "4" and "5" in only):
            continue
        print(f"bench: figure {number} ({key})...", file=log, flush=True)
        began = time.monotonic()
        result = step()
        result.pop("_stderr", None)
        result["seconds"] = round(time.monotonic() - began, 1)
        result["loadavg_after"] = loadavg()
        results[key] = result
    results["targets"] = targets(results)
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["loadavg_after"] = loadavg()

    options.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    options.output.write_text(text + "\n")
    if options.output == RESULTS / "latest.json":
        stamp = results["started_at"].replace(":", "").replace("+0000", "Z")
        (RESULTS / f"run-{stamp}.json").write_text(text + "\n")

    m = results["machine"]
    print(f"Costroute benchmarks{' (QUICK: not comparable)' if options.quick else ''}: "
          f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {results['started_at']}, "
          f"load {results['loadavg_before']} -> {results['loadavg_after']}, {results['duration_s']} s")
    print()
    print(table(results))
    print()
    missed = [t["target"] for t in results["targets"] if not t["holds"]]
    print(f"targets: {len(results['targets']) - len(missed)} of {len(results['targets'])} hold"
          + (f"; missed: {'; '.join(missed)}" if missed else ""))
    print(f"results: {options.output.relative_to(ROOT) if options.output.is_relative_to(ROOT) else options.output}")
    if results["loadavg_before"] > 0.5 * (os.cpu_count() or 1):
        print("note: the machine was busy when the run started (load average above half the cores); "
              "figures may be slower than the machine's best.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
