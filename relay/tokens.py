"""Local token estimates: used for holds, and for billing when an upstream reports no usage.

Not a tokenizer. English runs about four characters a token, CJK about one character a token; the
estimate follows the byte mix of the text. Counts made here are recorded as `usage_source=local`.
"""
from __future__ import annotations

import math

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
        import orjson

        total += text_tokens(orjson.dumps(tools).decode())
    return total


def hold_prompt_tokens(messages: list, tools: list | None = None) -> int:
    """A deliberately generous prompt estimate for the hold: twice the local estimate.

    Holds must not fall short of the real charge; over-reserving only delays a request that a
    nearly empty balance could not be sure to cover anyway.
    """
    return 2 * prompt_tokens(messages, tools)
