"""The Lambda artifact, built as `sam build` builds it (`make build-RouterFunction`), run in a bare Python.

The runtime wheels come from the wheelhouse `make test` downloads during setup (env WHEELHOUSE),
so the build runs offline. Run it alone with:
``make .cache/wheels/.stamp && WHEELHOUSE=$PWD/.cache/wheels .venv/bin/python -m pytest tests/integration/test_artifact.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.payloads import repo_root

pytestmark = pytest.mark.slow

ROOT = Path(repo_root())
EVENTS_DIR = ROOT / "events"
EXPECTED_STATUS = {
    "health.json": 200,
    "models.json": 200,
    "route.json": 200,
    "route_base64.json": 200,
    "route_dry_run.json": 200,
    "route_invalid.json": 400,
    "chat_completions.json": 200,
}
# Names that belong to the repository but never to the artifact.
EXCLUDED_NAMES = {"tests", "events", "bench", ".venv", ".git", ".cache", "template.yaml", "Makefile", "src"}

# Runs under `python -I -S`: no site-packages, no PYTHONPATH, no user site; only the stdlib and the artifact.
INVOKE_SCRIPT = """
import json, sys
artifact, events_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, artifact)
import handler
import costroute
assert costroute.__file__.startswith(artifact), costroute.__file__
import flask, awsgi, boto3, openai  # every runtime dependency resolves from the artifact alone
for module in (flask, awsgi, boto3, openai):
    assert module.__file__.startswith(artifact), module.__file__

class Context:
    def get_remaining_time_in_millis(self):
        return 30000

results = {}
for name in sys.argv[3:]:
    with open(events_dir + "/" + name, encoding="utf-8") as f:
        response = handler.lambda_handler(json.load(f), Context())
    results[name] = {"status": response["statusCode"], "body": json.loads(response["body"])}
print(json.dumps({"results": results, "path": sys.path, "no_site": "site" not in sys.modules}))
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ARTIFACTS_DIR after `make build-RouterFunction` with the offline wheelhouse."""
    wheelhouse = os.environ.get("WHEELHOUSE")
    if not wheelhouse:
        pytest.skip("WHEELHOUSE is unset: run `make test`, or `make .cache/wheels/.stamp` and set WHEELHOUSE")
    out = tmp_path_factory.mktemp("artifact")
    build(out, wheelhouse)
    return out


def build(out: Path, wheelhouse: str) -> str:
    """Run `make build-RouterFunction` into ``out``; return its output, asserting it succeeded."""
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "build-RouterFunction",
            f"ARTIFACTS_DIR={out}",
            f"ARTIFACT_PIP_FLAGS=--no-index --find-links {wheelhouse}",
            # The interpreter the wheelhouse was downloaded for (sam build picks the runtime's).
            f"PYTHON={sys.executable}",
            f"ARTIFACT_PYTHON={sys.executable}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_artifact_holds_the_handler_and_package(artifact: Path) -> None:
    assert (artifact / "handler.py").read_text() == (ROOT / "handler.py").read_text()
    assert (artifact / "costroute" / "__init__.py").is_file()
    assert (artifact / "costroute" / "web" / "__init__.py").is_file()
    source_files = {p.relative_to(ROOT / "src") for p in (ROOT / "src" / "costroute").rglob("*.py")}
    built_files = {p.relative_to(artifact) for p in (artifact / "costroute").rglob("*.py")}
    assert built_files == source_files


def test_artifact_holds_nothing_from_the_repository_but_the_code(artifact: Path) -> None:
    top = {p.name for p in artifact.iterdir()}
    assert not top & EXCLUDED_NAMES, top & EXCLUDED_NAMES
    for path in artifact.rglob("*"):
        parts = set(path.relative_to(artifact).parts)
        assert not parts & {"tests", "events", "bench", ".venv", "fakes"} or _inside_a_dependency(artifact, path), path
    # Dev-only packages stay out: pytest, moto, cfn-lint, gunicorn.
    for name in ("pytest", "_pytest", "moto", "cfnlint", "gunicorn"):
        assert not (artifact / name).exists(), name


def test_artifact_ships_bytecode_for_its_runtime(artifact: Path) -> None:
    """A read-only /var/task cannot cache .pyc files, so the build compiles every module."""
    tag = sys.implementation.cache_tag
    for source in [artifact / "handler.py", *(artifact / "costroute").rglob("*.py"), artifact / "flask" / "app.py"]:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert compiled.is_file(), compiled
        # An unchecked-hash .pyc (flags 0b01): valid whatever timestamps the zip gives the sources.
        assert int.from_bytes(compiled.read_bytes()[4:8], "little") == 0b01, compiled


def _inside_a_dependency(artifact: Path, path: Path) -> bool:
    """Whether a path lies inside a third-party package (which may ship its own tests folder)."""
    first = path.relative_to(artifact).parts[0]
    return first not in ("costroute", "handler.py")


def test_artifact_serves_every_event_in_a_bare_python(artifact: Path) -> None:
    names = sorted(p.name for p in EVENTS_DIR.glob("*.json"))
    assert set(names) == set(EXPECTED_STATUS)
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(artifact)}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", INVOKE_SCRIPT, str(artifact), str(EVENTS_DIR), *names],
        cwd=str(artifact.parent),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["no_site"] is True
    assert not any("site-packages" in entry for entry in report["path"]), report["path"]
    statuses = {name: outcome["status"] for name, outcome in report["results"].items()}
    assert statuses == EXPECTED_STATUS
    assert report["results"]["route.json"]["body"]["model"] == "mock:advanced"
    assert report["results"]["chat_completions.json"]["body"]["object"] == "chat.completion"


def test_rebuild_into_the_same_folder_replaces_the_packages(artifact: Path) -> None:
    """A second build (sam build reusing its folder) must not keep what is already there."""
    flask_init = artifact / "flask" / "__init__.py"
    original = flask_init.read_text()
    flask_init.write_text("raise ImportError('stale copy')\n")
    (artifact / "costroute" / "stale_module.py").write_text("")
    output = build(artifact, os.environ["WHEELHOUSE"])
    assert "already exists" not in output
    assert flask_init.read_text() == original
    assert not (artifact / "costroute" / "stale_module.py").exists()
