"""``make bench`` (``python -m bench``): every figure beside its floor and target, in one run.

Prints a table on stdout (progress on stderr) and writes ``bench/results/latest.json`` (plus a
timestamped copy) for later comparison. Options:

  --quick          short runs, to check that everything works (figures are not comparable)
  --only 1,3       only these figures (1 selection, 2 Lambda in process, 3 HTTP, 4 cold start
                   and 5 imports, 6 dry run over 1,000 models)
  --output PATH    where to write the JSON (default bench/results/latest.json; quick.json
                   with --quick, so a smoke run never replaces the last real figures)

Needs no network but loopback, except ``apt-get install -y wrk`` when wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import coldstart, loopback, selection
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
    versions = {}
    for package in ("flask", "werkzeug", "aws-wsgi", "gunicorn", "boto3", "moto"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5).stdout.split("\n")[0]
    except OSError:
        wrk_version = None
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


def run_lambda(quick: bool) -> dict[str, Any]:
    args = ["-m", "bench.inprocess", "lambda"] + (["--quick"] if quick else [])
    return run_child_json(args, clean_env())


def run_dryrun(quick: bool) -> dict[str, Any]:
    args = ["-m", "bench.inprocess", "dryrun"] + (["--quick"] if quick else [])
    return run_child_json(args, clean_env({"MODELS_CONFIG_JSON": json.dumps(registry_rows(1000))}))


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
        check("mock cold start imports neither openai nor boto3", len(cold["imports"]["forbidden_imported"]), 0, "<=")
    return checks


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
                     mark("mock cold start imports neither openai nor boto3", f"openai/boto3: {forbidden}")))
    dry = results.get("dryrun")
    if dry:
        for name, label in (("all_candidates", "all candidates"), ("max_candidates_5", "max_candidates 5")):
            d = dry[name]
            rows.append((f"6 dry run, 1,000 models, {label}: p50 µs, bytes",
                         f"{_fmt(d['p50_us'])}, {d['response_bytes']:,} B", "", "", ""))
    headers = ("figure", "ours", "floor", "ratio", "target")
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(5)] if rows else [10] * 5
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, not figures")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated figure numbers")
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
        "loadavg_before": loadavg(),
    }
    log = sys.stderr
    steps = (
        ("1", "selection", lambda: selection.run(options.quick)),
        ("2", "lambda", lambda: run_lambda(options.quick)),
        ("6", "dryrun", lambda: run_dryrun(options.quick)),
        ("4", "coldstart", lambda: coldstart.run(options.quick, log)),
        ("3", "http", lambda: loopback.run(options.quick, log)),
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
