"""Token, cost and latency estimates, and the hard per-request output ceiling.

Two token counts are kept apart on purpose:

* ``estimate_prompt_tokens`` is the *typical* count used to rank models: about four ASCII
  characters per token (OpenAI's rule of thumb for English with cl100k/o200k) and one token per
  non-ASCII character, plus the chat format's overhead (4 per message, 3 to prime the reply, as in
  OpenAI's cookbook). For English prose it is usually within about 25% of the real count; it
  undercounts text dense in digits, symbols or URLs (up to about 2x) and overcounts accented Latin
  text (up to about 2x).
* ``prompt_token_bound`` is a count the provider can never exceed, used for the cost ceiling:
  every token of a byte-level BPE tokenizer (GPT-2 through o200k, Llama 3) or of SentencePiece
  with byte fallback covers at least one UTF-8 byte, so a text never has more tokens than bytes.
  Each message adds its role's and name's bytes and a generous 8 tokens of framing, and the reply
  priming 8 more, well above the 3 to 4 that OpenAI documents.

Costs are exact ``Decimal`` arithmetic: tokens / 1000 x price per 1k. The ceiling built on the
bound is in ``plan.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Context, Decimal, localcontext
from typing import NamedTuple

from costroute.core.registry import Model

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_FOR_REPLY = 3
BOUND_TOKENS_PER_MESSAGE = 8
BOUND_TOKENS_FOR_REPLY = 8

DEFAULT_OUTPUT_TOKENS = 256
# Money arithmetic runs at 100 significant digits: exact for token counts times any price a
# registry can sensibly hold, where the default 28 digits could round a large budget.
EXACT = Context(prec=100)
UNKNOWN_TASK_QUALITY = 2
NO_TASK_QUALITY = 1


class TaskDefaults(NamedTuple):
    """What a task type implies when the caller does not say: a quality floor and an output size."""

    quality: int
    output_tokens: int


TASK_DEFAULTS: Mapping[str, TaskDefaults] = {
    "classification": TaskDefaults(quality=1, output_tokens=16),
    "extraction": TaskDefaults(quality=2, output_tokens=256),
    "chat": TaskDefaults(quality=2, output_tokens=256),
    "summarization": TaskDefaults(quality=3, output_tokens=256),
    "qa": TaskDefaults(quality=3, output_tokens=256),
    "translation": TaskDefaults(quality=3, output_tokens=512),
    "creative_writing": TaskDefaults(quality=3, output_tokens=512),
    "code": TaskDefaults(quality=4, output_tokens=1024),
    "reasoning": TaskDefaults(quality=5, output_tokens=1024),
}


class ChatMessage(NamedTuple):
    """The parts of one chat message that count towards the prompt."""

    role: str
    content: str
    name: str | None = None


class Estimate(NamedTuple):
    """What one model is expected to take and cost for one request (a tuple: built per model per request)."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    latency_ms: int


def estimate_text_tokens(text: str) -> int:
    """Typical token count of a text: ~4 ASCII characters per token, 1 per other character."""
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", errors="ignore"))
    other_chars = len(text) - ascii_chars
    return -(-ascii_chars // CHARS_PER_TOKEN) + other_chars


def estimate_prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    """Typical prompt token count of a chat, with the chat format's overhead."""
    total = TOKENS_FOR_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_text_tokens(message.content)
        if message.name:
            total += 1
    return total


def prompt_token_bound(messages: Iterable[ChatMessage]) -> int:
    """A prompt token count no byte-level tokenizer can exceed (UTF-8 bytes plus framing)."""
    total = BOUND_TOKENS_FOR_REPLY
    for message in messages:
        total += BOUND_TOKENS_PER_MESSAGE + _utf8_len(message.role) + _utf8_len(message.content)
        if message.name:
            total += _utf8_len(message.name)
    return total


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def expected_output_tokens(
    requested: int | None, task_type: str | None, param: str = "metadata.expected_output_tokens"
) -> tuple[int, str]:
    """Output tokens before any model's cap, and where the number came from (``param`` as the caller named it)."""
    if requested is not None:
        return requested, param
    if task_type is not None and task_type in TASK_DEFAULTS:
        return TASK_DEFAULTS[task_type].output_tokens, f"the default for task_type '{task_type}'"
    if task_type is not None:
        return DEFAULT_OUTPUT_TOKENS, f"the global default (task_type '{task_type}' is not in the table)"
    return DEFAULT_OUTPUT_TOKENS, "the global default"


def required_quality(
    min_quality: int | None, task_type: str | None, param: str = "constraints.min_quality"
) -> tuple[int, str]:
    """The quality floor and where it came from (``param`` as the caller named min_quality)."""
    if min_quality is not None:
        return min_quality, param
    if task_type is not None and task_type in TASK_DEFAULTS:
        return TASK_DEFAULTS[task_type].quality, f"the default for task_type '{task_type}'"
    if task_type is not None:
        return UNKNOWN_TASK_QUALITY, f"the default for an unknown task_type ('{task_type}')"
    return NO_TASK_QUALITY, "the default (no min_quality and no task_type)"


def cost_usd(model: Model, input_tokens: int, output_tokens: int) -> Decimal:
    """Exact dollar cost of a call with these token counts."""
    with localcontext(EXACT):
        return input_tokens * model.input_cost_per_token + output_tokens * model.output_cost_per_token


def estimate_for(model: Model, input_tokens: int, output_tokens: int) -> Estimate:
    """The estimate for one model: output capped at its max_output_tokens; latency as registered.

    Latency is the registry's ``latency_ms`` whatever the output length: the registry states a
    typical time to a complete answer, and no per-token speed is known for a model.
    """
    return estimates_for((model,), input_tokens, output_tokens)[model.id]


def estimates_for(models: Iterable[Model], input_tokens: int, output_tokens: int) -> dict[str, Estimate]:
    """``estimate_for`` of every model, keyed by id: the hot path of selection, so done in one loop."""
    exact_input = Decimal(input_tokens)
    estimates = {}
    with localcontext(EXACT):
        for model in models:
            output = output_tokens if output_tokens <= model.max_output_tokens else model.max_output_tokens
            cost = exact_input * model.input_cost_per_token + output * model.output_cost_per_token
            estimates[model.id] = Estimate(input_tokens, output, cost, model.latency_ms)
    return estimates
