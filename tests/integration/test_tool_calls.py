"""Tool calls from an OpenAI-compatible provider reach /v1 callers, plain and streamed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import openai
import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.fakes.fake_openai import FakeOpenAI, tool_call

KEY = "sk-test-tool-calls-0c1d"
REGISTRY = json.dumps([{"provider": "openai", "name": "gpt-tools", "quality": 4, "in_cost_per_1k": 0.001,
                        "out_cost_per_1k": 0.002, "latency_ms": 300, "max_output_tokens": 1000}])
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
          "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture
def sdk(make_app: Callable[..., Flask]) -> Iterator[tuple[openai.OpenAI, FakeOpenAI]]:
    """The real SDK against the router over loopback, the router against the fake provider."""
    fake = FakeOpenAI(api_key=KEY)
    app = make_app(models_config_json=REGISTRY, openai_api_key=KEY, openai_base_url=fake.base_url)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="x", max_retries=0), fake
    finally:
        server.shutdown()
        fake.close()


def test_a_tool_call_answer_is_passed_back(sdk: tuple[openai.OpenAI, FakeOpenAI]) -> None:
    client, fake = sdk
    fake.enqueue(tool_call("get_weather", '{"city": "Oslo"}'))
    completion = client.chat.completions.create(model="auto", messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Oslo"}')
    assert fake.chat_requests[0].body["tools"] == TOOLS
    assert completion.usage.completion_tokens == 2


def test_a_streamed_tool_call_arrives_as_deltas(sdk: tuple[openai.OpenAI, FakeOpenAI]) -> None:
    client, fake = sdk
    fake.enqueue(tool_call("get_weather", '{"city": "Oslo"}'))
    chunks = list(client.chat.completions.create(model="auto", messages=MESSAGES, tools=TOOLS, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == '{"city": "Oslo"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == 2
