"""OpenAI Chat Completions messages read into a neutral conversation, for adapters of other wires.

Anthropic's Messages API and Bedrock's Converse API want the same things from an OpenAI request,
each in its own JSON: the system and developer messages apart from the conversation, strictly
alternating user and assistant turns (consecutive messages of one role merged into one turn),
assistant ``tool_calls`` as tool-use blocks, ``role: "tool"`` results as tool-result blocks in a
user turn, function tools with their JSON schema, a tool choice, and stop sequences. This module
reads all that once; each adapter renders it into its own wire format.

A request these wires cannot express is refused with ``Untranslatable``, whose message names the
field; adapters report it from ``unsupported`` (so routing skips the model, and a pinned request
is a 400) rather than dropping anything silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from costroute.core.requests import content_text


class Untranslatable(ValueError):
    """A request the target wire cannot express; the message names the field."""


@dataclass(frozen=True)
class Text:
    """A text block; ``cache_control`` when the caller marked a prompt-cache breakpoint after it."""

    text: str
    cache_control: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ToolUse:
    """A tool call the assistant made."""

    id: str
    name: str
    input: Any


@dataclass(frozen=True)
class ToolResult:
    """The result of a tool call, sent back by the caller."""

    tool_use_id: str
    text: str


Block = Text | ToolUse | ToolResult


@dataclass(frozen=True)
class Turn:
    """One turn of strictly alternating roles."""

    role: Literal["user", "assistant"]
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Conversation:
    """The system text and the turns of a chat."""

    system: tuple[Text, ...]
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class FunctionTool:
    """A function tool: its name, description and JSON schema."""

    name: str
    description: str | None
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolChoice:
    """``auto``, ``none``, ``any`` (OpenAI's ``required``) or one named ``tool``."""

    kind: Literal["auto", "none", "any", "tool"]
    name: str | None = None


def _texts(content: Any) -> list[Text]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    if isinstance(content, list):
        return [
            Text(part.get("text", ""), part.get("cache_control") if isinstance(part.get("cache_control"), dict) else None)
            for part in content
            if isinstance(part, dict) and part.get("text")
        ]
    return []


def _tool_uses(index: int, calls: Any) -> list[ToolUse]:
    uses = []
    for call_index, call in enumerate(calls or ()):
        function = call.get("function") or {}
        where = f"messages[{index}].tool_calls[{call_index}].function.arguments"
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError as exc:
            raise Untranslatable(f"'{where}' is not JSON, so it cannot be sent as a tool-use input") from exc
        if not isinstance(arguments, dict):
            raise Untranslatable(f"'{where}' must be a JSON object to be sent as a tool-use input")
        uses.append(ToolUse(id=str(call.get("id")), name=str(function.get("name")), input=arguments))
    return uses


def read_conversation(messages: Sequence[Mapping[str, Any]]) -> Conversation:
    """The conversation of validated OpenAI messages (see ``core.requests.parse_chat_body``)."""
    system: list[Text] = []
    turns: list[tuple[Literal["user", "assistant"], list[Block]]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        blocks: list[Block]
        if role in ("system", "developer"):
            system.extend(_texts(content))
            continue
        if role == "function":
            raise Untranslatable(f"'messages[{index}].role' 'function' (deprecated) has no equivalent; use tools")
        if role == "tool":
            speaker: Literal["user", "assistant"] = "user"
            blocks = [ToolResult(tool_use_id=str(message.get("tool_call_id")), text=content_text(content))]
        elif role == "assistant":
            speaker = "assistant"
            if message.get("function_call") is not None:
                raise Untranslatable(f"'messages[{index}].function_call' (deprecated) has no equivalent; use tool_calls")
            blocks = [*_texts(content), *_tool_uses(index, message.get("tool_calls"))]
        else:
            speaker = "user"
            blocks = list(_texts(content))
        if not blocks:
            continue
        if turns and turns[-1][0] == speaker:
            turns[-1][1].extend(blocks)  # the wire wants strictly alternating roles: merge
        else:
            turns.append((speaker, blocks))
    if not turns:
        raise Untranslatable("'messages' holds no user or assistant content to send")
    if turns[0][0] != "user":
        raise Untranslatable("'messages' must have a user message before the first assistant message")
    return Conversation(system=tuple(system), turns=tuple(Turn(role, tuple(blocks)) for role, blocks in turns))


def function_tools(params: Mapping[str, Any]) -> tuple[FunctionTool, ...]:
    """The request's function tools."""
    tools = params.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise Untranslatable("'tools' must be an array of tools")
    read = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise Untranslatable(f"'tools[{index}]' must be a function tool: other tool types have no equivalent")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise Untranslatable(f"'tools[{index}].function.name' must be a non-empty string")
        schema = function.get("parameters")
        description = function.get("description")
        read.append(FunctionTool(name=name, description=description if isinstance(description, str) else None,
                                 parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}}))
    return tuple(read)


def tool_choice(params: Mapping[str, Any]) -> ToolChoice | None:
    """The request's tool choice, None when absent."""
    choice = params.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return ToolChoice(choice)
    if choice == "required":
        return ToolChoice("any")
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return ToolChoice("tool", name)
    raise Untranslatable("'tool_choice' must be 'auto', 'none', 'required' or a named function")


def stop_sequences(params: Mapping[str, Any]) -> list[str]:
    """The request's ``stop``, as a list."""
    stop = params.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return list(stop)
    raise Untranslatable("'stop' must be a string or an array of strings")


def refused_fields(params: Mapping[str, Any], translated: frozenset[str], harmless: frozenset[str]) -> list[str]:
    """The pass-through fields that are neither translated nor harmless to leave out, sorted."""
    return sorted(name for name, value in params.items()
                  if value is not None and name not in translated and name not in harmless)


def tool_call_json(use: ToolUse) -> dict[str, Any]:
    """A tool use as an OpenAI ``tool_calls`` entry."""
    return {"id": use.id, "type": "function", "function": {"name": use.name, "arguments": json.dumps(use.input)}}


def reserialised_growth(messages: Sequence[Mapping[str, Any]]) -> int:
    """Bytes by which tool-call arguments grow when parsed and sent as JSON input (``1e5`` becomes
    ``100000.0``): tokens the prompt bound, which counts the arguments as the caller wrote them, lacks."""
    growth = 0
    for message in messages:
        for call in message.get("tool_calls") or () if message.get("role") == "assistant" else ():
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if not isinstance(arguments, str):
                continue
            try:
                resent = json.dumps(json.loads(arguments or "{}"))
            except ValueError:
                continue  # refused by read_conversation before any call
            growth += max(0, len(resent.encode("utf-8")) - len(arguments.encode("utf-8")))
    return growth
