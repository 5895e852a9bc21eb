"""One cold start, run as a script in a fresh interpreter: ``python bench/cold_child.py MODE``.

Modes:

* ``floor``: ``import flask, awsgi`` and nothing else;
* ``handler``: ``import handler`` and serve ``events/route.json`` (the seed's haiku) once, with
  whatever configuration the environment holds (built-in registry, or SSM and Secrets Manager);
* ``aws``: where an AWS-configured cold start spends its time: ``import boto3``, each client's
  creation and its first call (to the endpoint in ``AWS_ENDPOINT_URL``).

It prints one JSON line: milliseconds since the script started (after the interpreter's own
start-up), the peak resident memory of this process (``VmHWM``; ``ru_maxrss`` from
``resource.getrusage`` beside it), and which heavy packages got imported.
Imports stay inside the timed blocks and the script itself imports only what the interpreter has
loaded already, so the figures are the modes' own cost.
"""

import os
import sys
import time

_started = time.perf_counter()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT  # the project root (for handler.py), not bench/
HEAVY = ("openai", "boto3", "botocore", "pydantic", "httpx", "flask", "werkzeug", "jinja2", "awsgi")


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


def main(mode: str) -> dict:
    result: dict = {"mode": mode}
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

    print(_json.dumps(main(sys.argv[1])))
