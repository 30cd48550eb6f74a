"""The charge of a request, where the caller sees it (docs/api.md, "The cost of every request").

- Every settled 200 answer carries `x-switchboard-cost-micro-usd` (integer µ$).
- A JSON body with a top-level `usage` object gets `usage.cost` (USD, a float, as OpenRouter reports
  it) and `usage.cost_micro_usd` (the exact integer), after any fields of the same name the
  upstream sent, so ours win in every JSON parser.
- A stream's headers leave before its cost is known: the event that reports the final usage (OpenAI's
  usage chunk, Anthropic's `message_delta`, the Responses API's `response.completed`) carries the same
  two fields in its `usage` object.

Small bodies are re-encoded (orjson: ~3 µs for a chat completion); large ones (embeddings, images)
get the two fields spliced in after a scan of the bytes that follow `"usage"`, which costs ~10 µs
whatever the size, where re-encoding 30 KB of embedding floats costs ~120 µs.
"""
from __future__ import annotations

import re

import orjson

from relay import pricing
from relay.context import Response

COST_HEADER = "x-switchboard-cost-micro-usd"
REENCODE_LIMIT = 16 * 1024

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACE = re.compile(rb"[{}]")


def usd(micro: int) -> float:
    return micro / 1_000_000


def _fields(micro: int) -> bytes:
    return b'"cost":' + orjson.dumps(usd(micro)) + b',"cost_micro_usd":%d' % micro


def _blank(match: re.Match[bytes]) -> bytes:
    return b'"' + b"_" * (len(match.group()) - 2) + b'"'


def _splice(body: bytes, micro: int) -> bytes | None:
    """The fields added at the end of the top-level `usage` object, when it is the last `"usage"`
    key of the body (as OpenAI, Anthropic and the Responses API place it); None otherwise."""
    at = body.rfind(b'"usage"')
    found = _USAGE.match(body, at) if at >= 0 else None
    if found is None:
        return None
    start = found.end()
    # Strings blanked to the same length: braces inside them must not count.
    tail = _STRING.sub(_blank, body[start:])
    depth, end = 1, -1
    for brace in _BRACE.finditer(tail):
        depth += 1 if brace.group() == b"{" else -1
        if depth == 0:
            end = brace.start()
            break
    if end < 0:
        return None
    after = tail[end + 1:]
    if after.count(b"}") - after.count(b"{") != 1:  # `usage` of a nested object, not the answer's
        return None
    sep = b"," if tail[:end].strip() else b""
    return body[: start + end] + sep + _fields(micro) + body[start + end:]


def with_cost(body: bytes, micro: int) -> bytes:
    """A JSON answer with its cost in `usage`; unchanged when it has no `usage` object."""
    if len(body) <= REENCODE_LIMIT:
        return _reencoded(body, micro)
    spliced = _splice(body, micro)
    if spliced is not None:
        return spliced
    return _reencoded(body, micro) if b'"usage"' in body else body


def _reencoded(body: bytes, micro: int) -> bytes:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return body
    usage["cost"] = usd(micro)
    usage["cost_micro_usd"] = micro
    return orjson.dumps(data)


def charged_response(response: Response, micro: int) -> Response:
    """A settled non-stream answer with its charge in a header and, for JSON, in `usage`."""
    body = response.body
    headers = [h for h in response.headers if h[0] != "Content-Length"]
    json = any(k == "Content-Type" and v.startswith("application/json") for k, v in headers)
    if json and isinstance(body, list) and len(body) == 1:
        body = [with_cost(body[0], micro)]
    length = sum(len(b) for b in body)
    return Response(response.status, [*headers, ("Content-Length", str(length)), (COST_HEADER, str(micro))], body)


def annotate_event(raw: bytes, usage: pricing.Usage, price: pricing.Price, multiplier_bp: int) -> bytes:
    """The SSE events of one upstream read that report usage, with the cost of that usage added to
    their `usage` object (top level, or the Responses API's `response.usage`). Runs once or twice
    a stream, on the events that carry usage."""
    micro = pricing.cost(usage, price, multiplier_bp)
    out = []
    for event in raw.split(b"\n\n"):
        if b'"usage"' in event:
            event = _annotated(event, micro)
        out.append(event)
    return b"\n\n".join(out)


def _annotated(event: bytes, micro: int) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if not line.startswith(b"data:"):
            continue
        try:
            data = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return event
        if not isinstance(data, dict):
            return event
        holder = data if isinstance(data.get("usage"), dict) else data.get("response")
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if not isinstance(usage, dict):
            return event
        usage["cost"] = usd(micro)
        usage["cost_micro_usd"] = micro
        lines[i] = b"data: " + orjson.dumps(data)
        return b"\n".join(lines)
    return event
