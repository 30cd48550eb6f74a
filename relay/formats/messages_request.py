"""Anthropic Messages request → OpenAI chat request, to serve /v1/messages through OpenAI-shaped chat.

Tool results become `tool` messages placed before the rest of their user turn (OpenAI wants them
right after the assistant's calls); images inside tool results, which OpenAI tool messages cannot
hold, follow in a user message. Server tools and thinking settings have no OpenAI counterpart.
"""
from __future__ import annotations

from relay.errors import bad_request
from relay.formats.common import data_url, tool_arguments

TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def _text(block: dict) -> str:
    return block.get("text") if isinstance(block.get("text"), str) else ""


def image_part(block: dict) -> dict:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = data_url(source.get("media_type") or "image/png", source.get("data") or "")
    elif source.get("type") == "url":
        url = source.get("url") or ""
    else:
        raise bad_request("An image source must be base64 or url.", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def document_part(block: dict) -> dict:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": data_url(source.get("media_type") or "application/pdf", source.get("data") or "")}}
    if source.get("type") == "text":
        return {"type": "text", "text": source.get("data") or ""}
    raise bad_request("A document source must be base64 or text.", param="messages")


def user_parts(blocks: list) -> list[dict]:
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


def tool_messages(block: dict) -> tuple[dict, list[dict]]:
    """(the tool message, image parts it carried) for a tool_result block."""
    content = block.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
    text = "\n".join(_text(b) for b in blocks if b.get("type") == "text" and _text(b))
    images = [image_part(b) for b in blocks if b.get("type") == "image"]
    if block.get("is_error"):
        text = "Error: " + text if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}, images


def user_messages(content) -> list[dict]:
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


def assistant_message(content) -> dict | None:
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
    message: dict = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def system_text(system) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(_text(b) for b in system or () if isinstance(b, dict) and _text(b))


def convert_tools(tools: list) -> list[dict]:
    """Custom tools only: Anthropic's server tools (web search, code execution …) run at Anthropic."""
    out = []
    for tool in tools or ():
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            continue
        fn = {"name": tool.get("name") or "", "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def tool_choice(choice) -> tuple[object, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) for Anthropic's tool_choice."""
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if choice.get("type") == "tool":
        return {"type": "function", "function": {"name": choice.get("name") or ""}}, parallel
    return TOOL_CHOICE.get(choice.get("type")), parallel


def messages_to_chat(payload: dict, model: str, max_tokens_field: str = "max_tokens") -> dict:
    """The OpenAI chat payload for an Anthropic Messages payload."""
    messages: list[dict] = []
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
        else:
            raise bad_request(f"Unknown message role '{turn.get('role')}'.", param="messages")
    body: dict = {"model": model, "messages": messages}
    if payload.get("max_tokens"):
        body[max_tokens_field] = payload["max_tokens"]
    for field in ("temperature", "top_p"):
        if isinstance(payload.get(field), (int, float)):
            body[field] = payload[field]
    if payload.get("stop_sequences"):
        body["stop"] = list(payload["stop_sequences"])
    tools = convert_tools(payload.get("tools"))
    if tools:
        body["tools"] = tools
        choice, parallel = tool_choice(payload.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = choice
        if parallel is not None:
            body["parallel_tool_calls"] = parallel
    user = (payload.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        body["user"] = user
    if payload.get("stream") is True:
        body["stream"] = True
    return body
