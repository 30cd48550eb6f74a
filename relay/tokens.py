"""Local token estimates: used for holds, and for billing when an upstream reports no usage.

Not a tokenizer. English runs about four characters a token, CJK about one character a token; the
estimate follows the byte mix of the text. Counts made here are recorded as `usage_source=local`.
"""
from __future__ import annotations

from typing import Any

import base64
import binascii
import math
import re

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


# Attachments are not read here; they are sized from what the request says about them, erring high
# (docs/holds.md lists these bounds). An image is billed by its detail; `low` is one fixed tile.
LOW_DETAIL_IMAGE_TOKENS = 85
# Audio: providers bill 10-32 tokens a second. Without a WAV header to give the real duration, the
# bytes are taken as 16 kbit/s (2,000 bytes a second), lower than any speech codec in use.
AUDIO_TOKENS_PER_SECOND = 32
AUDIO_BYTES_PER_SECOND_FLOOR = 2_000
# Documents (PDF): each page is read as text and as an image, up to ~3,000 tokens a page; a PDF whose
# pages cannot be counted is taken as one page per 3 KB.
DOCUMENT_TOKENS_PER_PAGE = 3_000
DOCUMENT_BYTES_PER_PAGE_FLOOR = 3_000
# A file given by id or URL cannot be sized before the call.
FILE_REFERENCE_TOKENS = 20_000


def _decoded_size(data: str) -> int:
    """Bytes carried by a base64 string or data URL, without decoding it."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    return len(data.rstrip("=")) * 3 // 4


def _wav_seconds(data: str) -> float | None:
    """A WAV's duration from its header (byte rate at offset 28), when the data is a WAV."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        head = base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if len(head) < 32 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    byte_rate = int.from_bytes(head[28:32], "little")
    return _decoded_size(data) / byte_rate if byte_rate > 0 else None


def audio_tokens(data: str) -> int:
    seconds = _wav_seconds(data)
    if seconds is None:
        seconds = _decoded_size(data) / AUDIO_BYTES_PER_SECOND_FLOOR
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def document_tokens(data: str) -> int:
    """A base64 PDF: its pages counted from the `/Type /Page` objects, or guessed from its size."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    pages = len(re.findall(rb"/Type\s*/Page(?![a-z])", raw))
    if pages == 0:
        pages = max(1, math.ceil(len(raw) / DOCUMENT_BYTES_PER_PAGE_FLOOR))
    return pages * DOCUMENT_TOKENS_PER_PAGE


def image_tokens(detail: object) -> int:
    return LOW_DETAIL_IMAGE_TOKENS if detail == "low" else IMAGE_TOKENS


def part_tokens(part: object) -> int:
    """Tokens of one content part, in any of the formats the relay reads: OpenAI chat (`text`,
    `image_url`, `input_audio`, `file`), Responses (`input_text`, `input_image`, `input_audio`,
    `input_file`), Anthropic (`text`, `image`, `document`, `tool_use`, `tool_result`, `thinking`)
    and Gemini (`text`, `inlineData`, `fileData`)."""
    if isinstance(part, str):
        return text_tokens(part)
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        return image_tokens(image.get("detail") if isinstance(image, dict) else None)
    if kind in ("input_image", "image"):
        return image_tokens(part.get("detail"))
    if kind == "input_audio":
        audio = part.get("input_audio", part)
        data = audio.get("data") if isinstance(audio, dict) else None
        return audio_tokens(data) if isinstance(data, str) else FILE_REFERENCE_TOKENS
    if kind in ("file", "input_file"):
        file = part.get("file", part)
        data = file.get("file_data") if isinstance(file, dict) else None
        return document_tokens(data) if isinstance(data, str) else FILE_REFERENCE_TOKENS
    if kind == "document":
        source = part.get("source")
        if not isinstance(source, dict):
            source = {}
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return document_tokens(source["data"])
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return text_tokens(source["data"])
        return FILE_REFERENCE_TOKENS
    if kind == "tool_use":
        return text_tokens(str(part.get("name", ""))) + _json_tokens(part.get("input"))
    if kind == "tool_result":
        content = part.get("content")
        if isinstance(content, str):
            return text_tokens(content)
        return sum(part_tokens(p) for p in content) if isinstance(content, list) else 0
    for field in ("text", "thinking", "refusal"):
        if isinstance(part.get(field), str):
            return text_tokens(part[field])
    inline = part.get("inlineData") or part.get("inline_data")
    if isinstance(inline, dict):
        mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
        data = inline.get("data")
        if not isinstance(data, str):
            data = ""
        if mime.startswith("audio/"):
            return audio_tokens(data)
        return image_tokens(None) if mime.startswith("image/") else document_tokens(data)
    if part.get("fileData") or part.get("file_data"):
        return FILE_REFERENCE_TOKENS
    return 0


def _content_tokens(content: object) -> int:
    """Tokens of a message's content: a string or a list of parts."""
    if content is None:
        return 0
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        return sum(part_tokens(part) for part in content)
    return 0


def prompt_tokens(messages: list[Any], tools: list[Any] | None = None) -> int:
    """Estimated prompt tokens of an OpenAI chat request."""
    total = PER_REQUEST_OVERHEAD
    for message in messages or ():
        if not isinstance(message, dict):
            continue
        total += PER_MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {} if isinstance(call, dict) else {}
            total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    if tools:
        total += text_tokens(orjson.dumps(tools).decode())
    return total


def _json_tokens(value: object) -> int:
    try:
        return text_tokens(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels): not a prompt anyone means
        return 0


# Block fields that are plain text the model reads; everything else in a block of a known type is
# framing (ids, cache_control, signatures) or counted apart (images, nested content).
_BLOCK_TEXT = ("text", "thinking", "name", "tool_name")


def _block_tokens(block: object, depth: int = 0) -> int:
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
        return part_tokens(block)  # a PDF by its pages, a file reference by the flat bound
    if kind in ("text", "thinking", "tool_use", "server_tool_use", "tool_result", "tool_reference"):
        total = sum(text_tokens(block[f]) for f in _BLOCK_TEXT if isinstance(block.get(f), str))
        if "input" in block:
            total += _json_tokens(block["input"])
        return total + _anthropic_content_tokens(block.get("content"), depth + 1)
    if kind == "redacted_thinking":
        return text_tokens(block.get("data") or "") if isinstance(block.get("data"), str) else 0
    return _json_tokens(block)


def _anthropic_content_tokens(content: object, depth: int = 0) -> int:
    if isinstance(content, list):
        return sum(_block_tokens(b, depth) for b in content)
    return _block_tokens(content, depth)


def anthropic_prompt_tokens(payload: dict[str, Any]) -> int:
    """Estimated prompt tokens of an Anthropic Messages request, read from the payload as the caller
    sent it. It never refuses a shape: any role (Claude Code puts `system` turns inside `messages`),
    any block type, strings where lists are usual. The hold must accept whatever native forwarding
    accepts; judging the request is the upstream's job (or the validation layer's)."""
    total = PER_REQUEST_OVERHEAD + _anthropic_content_tokens(payload.get("system"))
    messages = payload.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += PER_MESSAGE_OVERHEAD + (_anthropic_content_tokens(message.get("content")) if isinstance(message, dict) else 0)
    return total + (_json_tokens(payload["tools"]) if payload.get("tools") else 0)


def hold_prompt_tokens(messages: list[Any], tools: list[Any] | None = None) -> int:
    """A deliberately generous prompt estimate for the hold: twice the local estimate.

    Holds must not fall short of the real charge; over-reserving only delays a request that a
    nearly empty balance could not be sure to cover anyway.
    """
    return 2 * prompt_tokens(messages, tools)
