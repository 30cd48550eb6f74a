"""Local token estimates: used for holds, and for billing when an upstream reports no usage.

Not a tokenizer. English runs about four characters a token, CJK about one character a token; the
estimate follows the byte mix of the text. Counts made here are recorded as `usage_source=local`.
"""
from __future__ import annotations

import math

import orjson

PER_MESSAGE_OVERHEAD = 4
PER_REQUEST_OVERHEAD = 3
IMAGE_TOKENS = 1_500  # a high-detail image tile set, roughly; images are not measured here


def text_tokens(text: str) -> int:
    if not text:
        return 0
    chars = len(text)
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - chars
    # Multi-byte characters (mostly CJK, 3 bytes) count about one token each.
    wide = extra_bytes // 2
    narrow = max(chars - wide, 0)
    return math.ceil(narrow / 4) + wide


def _content_tokens(content) -> tuple[int, int]:
    """(tokens of text, number of images) in a message's content (a string or a list of parts)."""
    if content is None:
        return 0, 0
    if isinstance(content, str):
        return text_tokens(content), 0
    tokens = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("image_url", "image", "input_image"):
                images += 1
            elif isinstance(part.get("text"), str):
                tokens += text_tokens(part["text"])
    return tokens, images


def prompt_tokens(messages: list, tools: list | None = None) -> int:
    """Estimated prompt tokens of an OpenAI chat request."""
    total = PER_REQUEST_OVERHEAD
    for message in messages or ():
        if not isinstance(message, dict):
            continue
        tokens, images = _content_tokens(message.get("content"))
        total += PER_MESSAGE_OVERHEAD + tokens + images * IMAGE_TOKENS
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {} if isinstance(call, dict) else {}
            total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    if tools:
        total += text_tokens(orjson.dumps(tools).decode())
    return total


def _json_tokens(value) -> int:
    try:
        return text_tokens(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels): not a prompt anyone means
        return 0


# Block fields that are plain text the model reads; everything else in a block of a known type is
# framing (ids, cache_control, signatures) or counted apart (images, nested content).
_BLOCK_TEXT = ("text", "thinking", "name", "tool_name")


def _block_tokens(block, depth: int = 0) -> int:
    """Tokens of one Anthropic content block, whatever its type: unknown blocks count as their JSON."""
    if depth > 3:  # tool results hold blocks, documents hold blocks; nothing real nests deeper
        return _json_tokens(block)
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") in ("text", "content"):
            return _anthropic_content_tokens(source.get("data") if source.get("type") == "text" else source.get("content"), depth + 1)
        return IMAGE_TOKENS  # a PDF or a file reference: not measured here
    if kind in ("text", "thinking", "tool_use", "server_tool_use", "tool_result", "tool_reference"):
        total = sum(text_tokens(block[f]) for f in _BLOCK_TEXT if isinstance(block.get(f), str))
        if "input" in block:
            total += _json_tokens(block["input"])
        return total + _anthropic_content_tokens(block.get("content"), depth + 1)
    if kind == "redacted_thinking":
        return text_tokens(block.get("data") or "") if isinstance(block.get("data"), str) else 0
    return _json_tokens(block)


def _anthropic_content_tokens(content, depth: int = 0) -> int:
    if isinstance(content, list):
        return sum(_block_tokens(b, depth) for b in content)
    return _block_tokens(content, depth)


def anthropic_prompt_tokens(payload: dict) -> int:
    """Estimated prompt tokens of an Anthropic Messages request, read from the payload as the caller
    sent it. It never refuses a shape: any role (Claude Code puts `system` turns inside `messages`),
    any block type, strings where lists are usual. The hold must accept whatever native forwarding
    accepts; judging the request is the upstream's job (or the validation layer's)."""
    total = PER_REQUEST_OVERHEAD + _anthropic_content_tokens(payload.get("system"))
    messages = payload.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += PER_MESSAGE_OVERHEAD + (_anthropic_content_tokens(message.get("content")) if isinstance(message, dict) else 0)
    return total + (_json_tokens(payload["tools"]) if payload.get("tools") else 0)


def hold_prompt_tokens(messages: list, tools: list | None = None) -> int:
    """A deliberately generous prompt estimate for the hold: twice the local estimate.

    Holds must not fall short of the real charge; over-reserving only delays a request that a
    nearly empty balance could not be sure to cover anyway.
    """
    return 2 * prompt_tokens(messages, tools)
