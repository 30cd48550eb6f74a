"""OpenAI chat request → Anthropic Messages request (for Anthropic upstreams).

System and developer messages, wherever they stand, become the `system` blocks; tool results
become `tool_result` blocks of the next user turn; consecutive turns of one role are merged, as
Anthropic requires alternation.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

from relay.errors import RelayError, bad_request
from relay.formats.common import parse_data_url, text_parts, tool_input

THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def unsupported(what: str) -> RelayError:
    return RelayError(501, "conversion_not_supported", f"{what} cannot be sent to this model's provider (Anthropic).")


def safe_id(tool_id: object) -> str:
    """Anthropic tool ids allow [a-zA-Z0-9_-] only; others' ids are mapped the same way both times."""
    return _ID_UNSAFE.sub("_", str(tool_id or "")) or "call"


def image_block(url: object) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request("An image_url must be an http(s) URL or a base64 data URL.", param="messages")


def file_block(part: dict[str, Any]) -> dict[str, Any]:
    file = part.get("file") or {}
    data = parse_data_url(file.get("file_data") or "")
    if data is None or data[0] != "application/pdf":
        raise unsupported("A file part other than an inline PDF")
    block = {"type": "document", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
    if file.get("filename"):
        block["title"] = str(file["filename"])
    return block


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """User (or tool result) content as Anthropic blocks. Empty texts are dropped: Anthropic refuses them."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                block = {"type": "text", "text": part["text"]}
                if isinstance(part.get("cache_control"), dict):
                    block["cache_control"] = part["cache_control"]
                blocks.append(block)
        elif kind == "image_url":
            image = part.get("image_url")
            blocks.append(image_block(image.get("url") if isinstance(image, dict) else image))
        elif kind == "file":
            blocks.append(file_block(part))
        elif kind == "input_audio":
            raise unsupported("Audio input")
        elif kind == "refusal" and part.get("refusal"):
            blocks.append({"type": "text", "text": part["refusal"]})
    return blocks


def assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in text_parts(message.get("content")) if t]
    if isinstance(message.get("refusal"), str) and message["refusal"] and not blocks:
        blocks.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": safe_id(call.get("id")), "name": fn.get("name") or "", "input": tool_input(fn.get("arguments"))})
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        blocks.append({"type": "tool_use", "id": safe_id(legacy.get("name")), "name": legacy.get("name") or "", "input": tool_input(legacy.get("arguments"))})
    return blocks


def tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    call_id = message.get("tool_call_id") or message.get("name")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_id(call_id)}
    content = content_blocks(message.get("content"))
    if content:
        block["content"] = content
    return block


def append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})
    if role == "user":
        # Tool results must open the user turn that follows the tool calls.
        turns[-1]["content"].sort(key=lambda b: b.get("type") != "tool_result")


def convert_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object.", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"type": "text", "text": t} for t in text_parts(message.get("content")) if t)
            continue
        if role == "user":
            blocks = content_blocks(message.get("content"))
        elif role == "assistant":
            blocks = assistant_blocks(message)
        elif role in ("tool", "function"):
            role, blocks = "user", [tool_result_block(message)]
        else:
            raise bad_request(f"Unknown message role '{role}'.", param="messages")
        if blocks:
            append_turn(turns, role, blocks)
    return system, turns


def convert_tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise unsupported(f"A tool of type '{tool.get('type') if isinstance(tool, dict) else tool}'")
        fn = tool.get("function") or {}
        converted = {"name": fn.get("name") or "", "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            converted["description"] = fn["description"]
        out.append(converted)
    return out


def convert_tool_choice(choice: Any, parallel: object) -> dict[str, Any] | None:
    if choice is None:
        converted = None
    elif choice in ("auto", "none"):
        converted = {"type": choice}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        converted = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise bad_request("tool_choice must be 'auto', 'none', 'required' or a named function.", param="tool_choice")
    if parallel is False:
        converted = dict(converted or {"type": "auto"})
        if converted["type"] != "none":
            converted["disable_parallel_tool_use"] = True
    return converted


def format_instruction(response_format: object) -> str | None:
    """Anthropic has no JSON mode: a json_object/json_schema request becomes a system instruction."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "Respond only with a single valid JSON object, with no other text."
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return "Respond only with a single JSON value that conforms to this JSON Schema, with no other text:\n" + orjson.dumps(schema).decode()
    return None


def chat_to_messages(payload: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The Anthropic request for an OpenAI chat payload. Fields with no counterpart are dropped
    (logprobs, seed, penalties, logit_bias); n > 1 and audio cannot be served and answer 501."""
    if payload.get("n") not in (None, 1):
        raise unsupported("n > 1 (several choices)")
    system, turns = convert_messages(payload["messages"])
    instruction = format_instruction(payload.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or default_max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = system
    if payload.get("tools"):
        body["tools"] = convert_tools(payload["tools"])
    choice = convert_tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
    if choice is not None and body.get("tools"):
        body["tool_choice"] = choice
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        body["stop_sequences"] = stops
    budget = THINKING_BUDGETS.get(str(payload.get("reasoning_effort") or ""))
    forced = body.get("tool_choice", {}).get("type") in ("any", "tool")
    if budget and max_tokens > 1024 and not forced:
        # Extended thinking refuses sampling changes and forced tool use; the effort wins.
        body["thinking"] = {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}
    else:
        if isinstance(payload.get("temperature"), (int, float)):
            body["temperature"] = min(max(float(payload["temperature"]), 0.0), 1.0)  # OpenAI's range is 0–2
        # Current Claude models refuse temperature and top_p together; temperature is the one callers
        # mean (Gemini CLI sends both).
        if isinstance(payload.get("top_p"), (int, float)) and "temperature" not in body:
            body["top_p"] = payload["top_p"]
        if isinstance(payload.get("top_k"), int):
            body["top_k"] = payload["top_k"]
    if isinstance(payload.get("user"), str) and payload["user"]:
        body["metadata"] = {"user_id": payload["user"]}
    if payload.get("stream") is True:
        body["stream"] = True
    return body
