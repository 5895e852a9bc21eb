"""The hard cost ceiling, against FakeOpenAI answering with every token it is allowed (spend_all).

FakeOpenAI counts prompt tokens as the worst case a byte-level tokenizer could reach (UTF-8 bytes +
4 per message + 3) and spends exactly the ``max_tokens`` it is sent, so the cost computed here from
its recorded requests is the most any real provider could charge for them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import pytest
from flask import Flask

from tests.fakes.fake_openai import FakeOpenAI, RecordedRequest, count_prompt_tokens, spend_all
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json  # noqa: F401
from tests.random_text import random_text

# Models of various prices (USD per 1k tokens): cheap and dear, output dearer or cheaper than input,
# output free, prices with many digits.
MODELS = [
    model_entry("openai", "nano", 1, 0.0001, 0.0004, max_output_tokens=16384),
    model_entry("openai", "mini", 2, 0.00015, 0.0006, max_output_tokens=4096),
    model_entry("openai", "odd", 3, 0.000123, 0.000987, max_output_tokens=8192),
    model_entry("openai", "mid", 4, 0.0025, 0.01, max_output_tokens=4096),
    model_entry("openai", "big", 5, 0.01, 0.03, max_output_tokens=8192),
    model_entry("openai", "freeout", 2, 0.0005, 0, max_output_tokens=512),
    model_entry("openai", "dearin", 3, 0.02, 0.001, max_output_tokens=2048),
]
PRICES = {m["name"]: (Decimal(repr(m["in_cost_per_1k"])), Decimal(repr(m["out_cost_per_1k"]))) for m in MODELS}
MAX_OUTPUT = {m["name"]: m["max_output_tokens"] for m in MODELS}


@pytest.fixture
def app(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Flask:  # noqa: F811
    fake_openai.set_default(spend_all())
    return make_app(
        models_config_json=registry_json(*MODELS), openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url
    )


def sent_cost(sent: RecordedRequest) -> tuple[Decimal, int, int]:
    """The exact cost of a recorded request under spend_all: (cost, prompt tokens, completion tokens)."""
    assert sent.body is not None
    price_in, price_out = PRICES[sent.body["model"]]
    prompt = count_prompt_tokens(sent.body["messages"])
    completion = sent.body.get("max_completion_tokens", sent.body.get("max_tokens"))
    assert isinstance(completion, int), "every call carries an output cap"
    return (prompt * price_in + completion * price_out) / 1000, prompt, completion


def true_ceiling(name: str, budget: Decimal, prompt_tokens: int) -> int:
    """The most output tokens that keep a worst-case call within budget (independent of the router's code)."""
    price_in, price_out = PRICES[name]
    left = budget - prompt_tokens * price_in / 1000
    if price_out == 0:
        return MAX_OUTPUT[name]
    return int((left * 1000 / price_out).to_integral_value(rounding=ROUND_FLOOR))


def random_request(rng: random.Random) -> tuple[dict[str, Any], Decimal]:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": random_text(rng, 800)})
    for _ in range(rng.randint(1, 3)):
        text = random_text(rng, 3000)
        if rng.random() < 0.15:
            content: Any = [{"type": "text", "text": text}, {"type": "text", "text": random_text(rng, 200)}]
        else:
            content = text
        message: dict[str, Any] = {"role": rng.choice(("user", "user", "assistant")), "content": content}
        if rng.random() < 0.1:
            message["name"] = "caller_" + str(rng.randint(0, 999))
        messages.append(message)
    messages[-1]["role"] = "user"
    budget = float(f"{10 ** rng.uniform(-5.5, -1.5):.3g}")
    body: dict[str, Any] = {"messages": messages, "routing": {"max_cost_usd": budget}}
    mode = rng.random()
    if mode < 0.3:
        body["model"] = "openai:" + rng.choice(list(PRICES))
    else:
        body["model"] = "auto"
        body["routing"]["min_quality"] = rng.randint(1, 5)
        body["routing"]["strict_budget"] = rng.random() < 0.5
        if rng.random() < 0.3:
            body["routing"]["expected_output_tokens"] = rng.randint(1, 3000)
    cap_field = rng.choice(("max_tokens", "max_completion_tokens", None, None))
    if cap_field:
        body[cap_field] = rng.randint(1, 5000)
    if rng.random() < 0.15:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body, Decimal(repr(budget))


def test_random_prompts_never_cost_more_than_the_budget(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    rng = random.Random(20261125)
    client = app.test_client()
    called = refused = ceiling_bit = caller_cap_won = 0
    for index in range(240):
        body, budget = random_request(rng)
        before = len(fake_openai.chat_requests)
        response = client.post("/v1/chat/completions", json=body)
        new = fake_openai.chat_requests[before:]
        context = f"request {index}: {json.dumps(body)[:300]}"
        if response.status_code == 402:
            refused += 1
            assert new == [], context
            assert response.get_json()["error"]["type"] == "budget_exceeded", context
            continue
        assert response.status_code == 200, f"{context}\n{response.get_data(as_text=True)[:500]}"
        assert len(new) == 1, context
        (sent,) = new
        called += 1
        cost, prompt_tokens, cap = sent_cost(sent)
        assert cost <= budget, f"{context}: cost {cost} > budget {budget}"
        name = sent.body["model"]
        assert 1 <= cap <= true_ceiling(name, budget, prompt_tokens), context
        assert cap <= MAX_OUTPUT[name], context
        caller_cap = body.get("max_tokens", body.get("max_completion_tokens"))
        cap_field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        assert sent.body[cap_field] == cap, context
        if caller_cap is not None:
            assert cap <= caller_cap, context
            caller_cap_won += cap == caller_cap
        if body.get("stream"):
            text = response.get_data(as_text=True)
            events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
            routing = events[-1]["routing"]
        else:
            routing = response.get_json()["routing"]
            usage = response.get_json()["usage"]
            assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens, cap), context
        assert routing["actual_cost_usd"] == float(cost), context
        assert routing["max_tokens"] == cap, context
        if routing["cost_ceiling_applied"]:
            ceiling_bit += 1
            assert any(line.startswith("Cost ceiling: max_tokens") for line in routing["decision_trace"]), context
            assert any("cut at the cost ceiling" in line for line in routing["decision_trace"]), context
    # The sample exercises every branch: calls capped by the ceiling, calls capped by the caller, refusals.
    assert called >= 100 and refused >= 10 and ceiling_bit >= 50 and caller_cap_won >= 10, (
        called, refused, ceiling_bit, caller_cap_won)


def test_ceiling_caps_max_tokens_and_the_trace_says_so(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    messages = [{"role": "user", "content": "Summarise the history of the sea in great detail."}]
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "openai:mid", "messages": messages, "routing": {"max_cost_usd": 0.002}},
    )
    assert response.status_code == 200
    body = response.get_json()
    (sent,) = fake_openai.chat_requests
    prompt = count_prompt_tokens(messages)
    expected_cap = true_ceiling("mid", Decimal("0.002"), prompt)
    # The router's own bound is a little looser than the fake's count (its framing is 8 tokens per
    # message plus the role's bytes, and 8 for the reply, against the fake's 4 and 3): 13 more input
    # tokens here, worth about 3.25 output tokens at these prices. Never higher than the exact cap.
    assert expected_cap - 4 <= sent.body["max_tokens"] <= expected_cap
    assert body["choices"][0]["finish_reason"] == "length"
    routing = body["routing"]
    assert routing["cost_ceiling_applied"] is True
    assert any(line.startswith(f"Cost ceiling: max_tokens {sent.body['max_tokens']} for openai:mid")
               for line in routing["decision_trace"])
    assert routing["decision_trace"][-1] == "The answer was cut at the cost ceiling's max_tokens (finish_reason 'length')."
    assert Decimal(repr(routing["actual_cost_usd"])) <= Decimal("0.002")


def test_callers_smaller_max_tokens_wins(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    client = app.test_client()
    for field in ("max_tokens", "max_completion_tokens"):
        response = client.post(
            "/v1/chat/completions",
            json={"model": "openai:mid", "messages": [{"role": "user", "content": "hi"}], field: 7,
                  "routing": {"max_cost_usd": 0.002}},
        )
        assert response.status_code == 200
        sent = fake_openai.chat_requests[-1].body
        assert sent[field] == 7
        assert set(sent) & {"max_tokens", "max_completion_tokens"} == {field}
        routing = response.get_json()["routing"]
        assert routing["max_tokens"] == 7
        assert routing["cost_ceiling_applied"] is False
        assert not any("cut at the cost ceiling" in line for line in routing["decision_trace"])


def test_callers_larger_max_tokens_is_cut_to_the_ceiling(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "openai:mid", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000,
              "routing": {"max_cost_usd": 0.002}},
    )
    assert response.status_code == 200
    assert fake_openai.chat_requests[-1].body["max_tokens"] < 200


def test_pass_through_fields_cannot_lift_the_cap(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    """Fields the router does not know go to the provider as they are, never as SDK arguments."""
    response = app.test_client().post(
        "/v1/chat/completions",
        json={
            "model": "openai:mid",
            "messages": [{"role": "user", "content": "hi"}],
            "routing": {"max_cost_usd": 0.002},
            "extra_body": {"max_tokens": 100000},
            "extra_headers": {"x-evil": "1"},
            "temperature": 0.5,
            "some_future_field": {"a": 1},
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    (sent,) = fake_openai.chat_requests
    assert sent.body["max_tokens"] < 200
    assert sent.body["temperature"] == 0.5
    assert sent.body["some_future_field"] == {"a": 1}
    assert "x-evil" not in sent.headers
    assert Decimal(repr(response.get_json()["routing"]["actual_cost_usd"])) <= Decimal("0.002")


@pytest.mark.parametrize("strict", [False, True])
def test_routed_request_whose_input_alone_is_over_budget_is_refused(
    app: Flask, fake_openai: FakeOpenAI, strict: bool  # noqa: F811
) -> None:
    """Even without strict_budget, no model is called when its worst-case input alone costs more."""
    prompt = "word " * 2000  # 10,000 bytes: at least $0.001 of input on the cheapest model
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": prompt}],
              "routing": {"max_cost_usd": 0.0005, "strict_budget": strict}},
    )
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "leaves no room within the budget of $0.0005 for one output token" in error["message"]
    assert fake_openai.chat_requests == []


def test_pinned_model_whose_input_alone_is_over_budget_is_not_called(
    app: Flask, fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "openai:big", "messages": [{"role": "user", "content": "x" * 300}],
              "routing": {"max_cost_usd": 0.003}},
    )
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "openai:big" in error["message"]
    assert fake_openai.chat_requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
        ({"prediction": {"type": "content", "content": "a predicted answer " * 50}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
    ids=["audio", "prediction", "web-search"],
)
def test_fields_the_ceiling_cannot_bound_are_refused(
    app: Flask, fake_openai: FakeOpenAI, extra: dict[str, Any], param: str  # noqa: F811
) -> None:
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "openai:mini", "messages": [{"role": "user", "content": "hi"}],
              "routing": {"max_cost_usd": 0.001}, **extra},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param
    assert fake_openai.chat_requests == []
