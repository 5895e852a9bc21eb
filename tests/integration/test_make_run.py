"""`make run PORT=...` serves on that port, and variables given to make reach the service."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from tests.payloads import HAIKU_REQUEST, repo_root


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, body: dict | None = None) -> dict:
    """GET (or POST a JSON body) and decode the answer."""
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
        return json.loads(response.read())


def test_make_run_serves_on_port_with_variables_from_make() -> None:
    port = free_port()
    registry = '[["mock","solo",4,0.001,0.002,100,512]]'
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}", f"MODELS_CONFIG_JSON={registry}"],
        cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "MODELS_CONFIG_JSON"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                models = get_json(f"http://127.0.0.1:{port}/models")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "make run did not answer within 30 s"
                time.sleep(0.2)
        assert [m["id"] for m in models["models"]] == ["mock:solo"]
        routed = get_json(f"http://127.0.0.1:{port}/route", {**HAIKU_REQUEST, "constraints": {"min_quality": 3}})
        assert routed["model"] == "mock:solo"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
