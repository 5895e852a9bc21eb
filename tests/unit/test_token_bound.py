"""prompt_token_bound is never below what a real tokenizer counts (o200k and cl100k, via bpe-openai).

bpe-openai ships its encodings inside the wheel, so it counts offline. The chat format's framing is
counted as OpenAI's cookbook does for these encodings: 3 tokens per message, 1 per name, 3 to prime
the reply, plus the tokens of the role, the name and the content.
"""

from __future__ import annotations

import random

import pytest

from costroute.core.estimate import ChatMessage, prompt_token_bound
from tests.random_text import random_text

bpe_openai = pytest.importorskip("bpe_openai")

ENCODINGS = ("o200k_base", "cl100k_base")


@pytest.fixture(scope="module", params=ENCODINGS)
def encoding(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return bpe_openai.get_encoding(request.param)


def _count(encoding, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(encoding.encode(text, disallowed_special=()))


def _chat_tokens(encoding, messages: list[ChatMessage]) -> int:  # type: ignore[no-untyped-def]
    total = 3
    for message in messages:
        total += 3 + _count(encoding, message.role) + _count(encoding, message.content)
        if message.name:
            total += 1 + _count(encoding, message.name)
    return total


def _random_chats(count: int) -> list[list[ChatMessage]]:
    rng = random.Random(4242)
    chats = []
    for _ in range(count):
        messages = [
            ChatMessage(
                role=rng.choice(("system", "user", "assistant", "tool")),
                content=random_text(rng, 4000),
                name=("n_" + str(rng.randint(0, 99))) if rng.random() < 0.1 else None,
            )
            for _ in range(rng.randint(1, 3))
        ]
        chats.append(messages)
    return chats


CHATS = _random_chats(250)


def test_bound_is_at_least_the_real_token_count(encoding) -> None:  # type: ignore[no-untyped-def]
    for messages in CHATS:
        real = _chat_tokens(encoding, messages)
        assert prompt_token_bound(messages) >= real, (prompt_token_bound(messages), real, messages)


def test_no_text_has_more_tokens_than_utf8_bytes(encoding) -> None:  # type: ignore[no-untyped-def]
    """The premise of the bound, checked on each text alone and on adversarial ones."""
    texts = [m.content for chat in CHATS for m in chat]
    texts += ["\U0001F3F3\ufe0f\u200d\U0001F308" * 50, "\x00\x01\x7f" * 100, " " * 1000, "\n\t" * 500,
              "<|endoftext|><|im_start|>" * 20, "ǅ̶̛͎" * 100]
    for text in texts:
        assert _count(encoding, text) <= len(text.encode("utf-8")), text[:80]


def test_the_tokenizer_really_counts() -> None:
    """Guard against a silently broken tokenizer making the checks above vacuous."""
    o200k = bpe_openai.get_encoding("o200k_base")
    assert _count(o200k, "hello world") == 2
    assert 0 < _count(o200k, "日本語のテキスト") < len("日本語のテキスト".encode())
