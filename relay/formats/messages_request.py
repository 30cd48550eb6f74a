"""Anthropic Messages request → OpenAI chat request, to serve /v1/messages through OpenAI-shaped chat.

Tool results become `tool` messages placed before the rest of their user turn (OpenAI wants them
right after the assistant's calls); images inside tool results, which OpenAI tool messages cannot
hold, follow in a user message. A `system` message inside `messages` (Claude Code's mid-conversation
reminders) stays a system message at its position. Server tools and thinking settings have no OpenAI
counterpart; deferred tools are offered only once a `tool_reference` in the history has loaded them,
as Anthropic's tool search does.
"""
from __future__ import annotations

import hashlib
from typing import Any

from relay.errors import bad_request
from relay.formats.common import data_url, tool_arguments

USER_ID_LIMIT = 64
TOOL_CHOICE: dict[str | None, str] = {"auto": "auto", "any": "required", "none": "none"}


def _text(block: dict[str, Any]) -> str:
    text = block.get("text")
    return text if isinstance(text, str) else ""


def image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = data_url(source.get("media_type") or "image/png", source.get("data") or "")
    elif source.get("type") == "url":
        url = source.get("url") or ""
    else:
        raise bad_request("An image source must be base64 or url.", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def document_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": data_url(source.get("media_type") or "application/pdf", source.get("data") or "")}}
    if source.get("type") == "text":
        return {"type": "text", "text": source.get("data") or ""}
    raise bad_request("A document source must be base64 or text.", param="messages")


def user_parts(blocks: list[Any]) -> list[dict[str, Any]]:
    parts = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text" and _text(block):
            parts.append({"type": "text", "text": _text(block)})
        elif kind == "image":
            parts.append(image_part(block))
        elif kind == "document":
            parts.append(document_part(block))
    return parts


def _result_text(block: dict[str, Any]) -> str:
    if block.get("type") == "text":
        return _text(block)
    if block.get("type") == "tool_reference" and isinstance(block.get("tool_name"), str):
        return f"Tool loaded: {block['tool_name']}"  # its definition joins the request's tools
    return ""


def tool_messages(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the tool message, image parts it carried) for a tool_result block."""
    content = block.get("content")
    blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
              else [b for b in content if isinstance(b, dict)] if isinstance(content, list) else [])
    text = "\n".join(filter(None, (_result_text(b) for b in blocks)))
    images = [image_part(b) for b in blocks if b.get("type") == "image"]
    if block.get("is_error"):
        text = "Error: " + text if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}, images


def user_messages(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}] if content else []
    out, images = [], []
    for block in content or ():
        if isinstance(block, dict) and block.get("type") == "tool_result":
            message, carried = tool_messages(block)
            out.append(message)
            images.extend(carried)
    parts = images + user_parts([b for b in content or () if isinstance(b, dict) and b.get("type") != "tool_result"])
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def assistant_message(content: Any) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts, calls = [], []
    for block in content or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and _text(block):
            texts.append(_text(block))
        elif kind == "tool_use":
            calls.append({"id": block.get("id") or "", "type": "function",
                          "function": {"name": block.get("name") or "", "arguments": tool_arguments(block.get("input") or {})}})
    if not texts and not calls:
        return None  # thinking blocks alone: nothing an OpenAI model can take back
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(_text(b) for b in system or () if isinstance(b, dict) and _text(b))


def loaded_tools(messages: Any) -> set[str]:
    """Names of deferred tools a `tool_reference` in a tool result has loaded."""
    names = set()
    for turn in messages if isinstance(messages, list) else ():
        content = turn.get("content") if isinstance(turn, dict) else None
        for block in content if isinstance(content, list) else ():
            inner = block.get("content") if isinstance(block, dict) and block.get("type") == "tool_result" else None
            for ref in inner if isinstance(inner, list) else ():
                if isinstance(ref, dict) and ref.get("type") == "tool_reference" and isinstance(ref.get("tool_name"), str):
                    names.add(ref["tool_name"])
    return names


def convert_tools(tools: list[Any] | None, loaded: frozenset[str] | set[str] = frozenset()) -> list[dict[str, Any]]:
    """Custom tools only: Anthropic's server tools (web search, code execution …) run at Anthropic.
    A deferred tool (`defer_loading`) stays out of the model's sight until tool search loads it."""
    out = []
    for tool in tools or ():
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            continue
        if tool.get("defer_loading") is True and tool.get("name") not in loaded:
            continue
        fn = {"name": tool.get("name") or "", "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def tool_choice(choice: Any) -> tuple[object, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) for Anthropic's tool_choice."""
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if choice.get("type") == "tool":
        return {"type": "function", "function": {"name": choice.get("name") or ""}}, parallel
    return TOOL_CHOICE.get(choice.get("type")), parallel


def end_user(user_id: object) -> str | None:
    """OpenAI's `user` for Anthropic's `metadata.user_id`. OpenAI takes a short opaque id (64
    characters); Claude Code sends a JSON document of device and session ids, so a longer one
    travels as its SHA-256 (stable per caller, as OpenAI recommends for end-user ids)."""
    if not isinstance(user_id, str) or not user_id:
        return None
    return user_id if len(user_id) <= USER_ID_LIMIT else hashlib.sha256(user_id.encode()).hexdigest()


def messages_to_chat(payload: dict[str, Any], model: str, max_tokens_field: str = "max_tokens") -> dict[str, Any]:
    """The OpenAI chat payload for an Anthropic Messages payload."""
    messages: list[dict[str, Any]] = []
    system = system_text(payload.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for turn in payload.get("messages") or ():
        if not isinstance(turn, dict):
            raise bad_request("Each message must be an object.", param="messages")
        if turn.get("role") == "user":
            messages.extend(user_messages(turn.get("content")))
        elif turn.get("role") == "assistant":
            message = assistant_message(turn.get("content"))
            if message is not None:
                messages.append(message)
        elif turn.get("role") == "system":
            text = system_text(turn.get("content"))
            if text:
                messages.append({"role": "system", "content": text})
        else:
            raise bad_request(f"Unknown message role '{turn.get('role')}'.", param="messages")
    body: dict[str, Any] = {"model": model, "messages": messages}
    if payload.get("max_tokens"):
        body[max_tokens_field] = payload["max_tokens"]
    for field in ("temperature", "top_p"):
        if isinstance(payload.get(field), (int, float)):
            body[field] = payload[field]
    if payload.get("stop_sequences"):
        body["stop"] = list(payload["stop_sequences"])
    tools = convert_tools(payload.get("tools"), loaded_tools(payload.get("messages")))
    if tools:
        body["tools"] = tools
        choice, parallel = tool_choice(payload.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = choice
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
    user = end_user((payload.get("metadata") or {}).get("user_id") if isinstance(payload.get("metadata"), dict) else None)
    if user:
        body["user"] = user
    if payload.get("stream") is True:
        body["stream"] = True
    return body
