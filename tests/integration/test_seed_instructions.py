"""A new user's first hour: the seed's own run instructions, and problems announced in one line at start-up.

The seed says ``pip install -r requirements.txt; export FLASK_APP=app.py; flask run --port 8000``
from the repository root, without installing the project. ``python -S`` with the venv's
site-packages on PYTHONPATH imports the requirements but skips the ``.pth`` file of the editable
install, so the package is found the way that user's would be: through the top-level app.py.
"""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.payloads import HAIKU_REQUEST, repo_root


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _seed_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELS_CONFIG", "OPENAI_"))}
    env.update(FLASK_APP="app.py", PYTHONPATH=site.getsitepackages()[0], **extra)
    return env


def _flask_run(port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-S", "-m", "flask", "run", "--port", str(port)], cwd=repo_root(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "flask run did not answer within 30 s"
            time.sleep(0.2)


@pytest.fixture
def seed_server() -> Iterator[int]:
    port = _free_port()
    process = _flask_run(port, _seed_env())
    try:
        _wait_for(port, process)
        yield port
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_the_seeds_run_instructions_work_from_the_repository_root(seed_server: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{seed_server}/route", data=json.dumps(HAIKU_REQUEST).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body["model"] == "mock:advanced"
    assert body["response"] == "[MOCK:advanced] Echo: Write a haiku about the sea."


def test_the_package_is_not_importable_that_way_without_app_py() -> None:
    """The check above is not vacuous: under -S the installed package is invisible."""
    result = subprocess.run([sys.executable, "-S", "-c", "import costroute"], cwd="/", env=_seed_env(),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0 and "No module named 'costroute'" in result.stderr


def test_an_invalid_registry_is_announced_in_one_line_at_start_up_and_the_service_still_answers() -> None:
    port = _free_port()
    process = _flask_run(port, _seed_env(MODELS_CONFIG_JSON='[["mock", "x", 9, 0.1, 0.1, 10, 10], ["mock"]]'))
    try:
        _wait_for(port, process)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=5)
        assert caught.value.code == 503
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    lines = [line for line in stderr.splitlines() if line.startswith("costroute:")]
    assert lines == ["costroute: the registry in MODELS_CONFIG_JSON is invalid: 2 errors: entry 1 (mock:x): field "
                     "'quality' must be an integer from 1 to 5, got 9; entry 2: a row must have 7 fields [provider, "
                     "name, quality, in_cost_per_1k, out_cost_per_1k, latency_ms, max_output_tokens], got 1"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [("PROVIDER_TIMEOUT_SECONDS", "1e9", "PROVIDER_TIMEOUT_SECONDS must be at most 900"),
     ("OPENAI_BASE_URL", "not-a-url", "OPENAI_BASE_URL must be an http or https URL"),
     ("CONFIG_TTL_SECONDS", "soon", "CONFIG_TTL_SECONDS must be a number")],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(variable: str, value: str, expected: str) -> None:
    process = _flask_run(_free_port(), _seed_env(**{variable: value}))
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "Traceback" not in stderr + stdout
    (line,) = [line for line in stderr.splitlines() if line.startswith("costroute:")]
    assert line.startswith(f"costroute: invalid setting: {expected}")
