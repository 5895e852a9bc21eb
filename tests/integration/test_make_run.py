"""`make run` and `make serve` serve on PORT, pass make's variables to the service, and stream."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

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


@pytest.fixture(params=["run", "serve"])
def served(request: pytest.FixtureRequest) -> Iterator[int]:
    """`make run` or `make serve` on a free port with a one-model registry given to make."""
    port = free_port()
    registry = '[["mock","solo",4,0.001,0.002,100,512]]'
    env = {k: v for k, v in os.environ.items() if k != "MODELS_CONFIG_JSON"}
    env["WEB_CONCURRENCY"] = "1"
    process = subprocess.Popen(
        ["make", "--no-print-directory", request.param, f"PORT={port}", f"MODELS_CONFIG_JSON={registry}"],
        cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"make {request.param} did not answer within 30 s"
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def test_serves_on_port_with_variables_from_make(served: int) -> None:
    models = get_json(f"http://127.0.0.1:{served}/models")
    assert [m["id"] for m in models["models"]] == ["mock:solo"]
    routed = get_json(f"http://127.0.0.1:{served}/route", {**HAIKU_REQUEST, "constraints": {"min_quality": 3}})
    assert routed["model"] == "mock:solo"


def test_streamed_answers_are_sent_in_chunks(served: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=5)
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Say hi."}]}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    # No Content-Length: the server sends events as they come instead of buffering the answer.
    assert response.getheader("Content-Length") is None
    events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    connection.close()
