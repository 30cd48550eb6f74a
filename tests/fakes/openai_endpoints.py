"""The fake OpenAI upstream's endpoints beyond chat: completions (JSON and SSE), embeddings (float
and base64), images, speech, transcriptions and translations (multipart), moderations, and the
Responses API (JSON and its named SSE events). Shapes follow the real API; usage comes from the
request's `Behaviour`."""
from __future__ import annotations

import base64
import json
import re
import struct
import time

SPEECH_BYTES = b"ID3\x04\x00fake-mp3-audio" * 8


def _sse(data: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _send_events(handler, events: list[bytes]) -> None:
    handler.start_stream()
    for event in events:
        handler.send_chunk(event)
    handler.end_stream()


def completions(handler, body: dict, b) -> None:
    model = body.get("model")
    base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model}
    if not body.get("stream"):
        choice = {"text": b.content, "index": 0, "logprobs": None, "finish_reason": b.finish_reason or "stop"}
        return handler.send_json(200, dict(base, choices=[choice], usage=b.usage()))
    events = [_sse(dict(base, choices=[{"text": p, "index": 0, "logprobs": None, "finish_reason": None}])) for p in b.pieces()]
    events.append(_sse(dict(base, choices=[{"text": "", "index": 0, "logprobs": None, "finish_reason": b.finish_reason or "stop"}])))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_sse(dict(base, choices=[], usage=b.usage())))
    _send_events(handler, events + [b"data: [DONE]\n\n"])


def embeddings(handler, body: dict, b) -> None:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
    vector = [0.25, -0.5, 0.125]
    as_base64 = body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(struct.pack("<3f", *vector)).decode() if as_base64 else vector} for i in range(len(inputs))]
    handler.send_json(200, {"object": "list", "data": data, "model": body.get("model"),
                            "usage": {"prompt_tokens": b.prompt_tokens, "total_tokens": b.prompt_tokens}})


def images(handler, body: dict, b) -> None:
    n = int(body.get("n") or 1)
    if body.get("response_format") == "b64_json" or str(body.get("model", "")).startswith("gpt-image"):
        data = [{"b64_json": base64.b64encode(b"fake-png-%d" % i).decode()} for i in range(n)]
    else:
        data = [{"url": f"https://images.example/fake-{i}.png", "revised_prompt": body.get("prompt")} for i in range(n)]
    answer = {"created": int(time.time()), "data": data}
    if str(body.get("model", "")).startswith("gpt-image"):
        answer["usage"] = {"input_tokens": b.prompt_tokens, "output_tokens": b.completion(), "total_tokens": b.prompt_tokens + b.completion(),
                           "input_tokens_details": {"text_tokens": b.prompt_tokens, "image_tokens": 0}}
    handler.send_json(200, answer)


def speech(handler, body: dict, b) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "audio/mpeg")
    handler.send_header("Content-Length", str(len(SPEECH_BYTES)))
    handler.end_headers()
    handler.wfile.write(SPEECH_BYTES)


def moderations(handler, body: dict, b) -> None:
    result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.001}}
    handler.send_json(200, {"id": "modr-fake", "model": body.get("model"), "results": [result]})


def response_object(body: dict, b, status: str = "completed", text: str | None = None) -> dict:
    done = status == "completed"
    message = {"type": "message", "id": "msg_fake", "status": status, "role": "assistant",
               "content": [{"type": "output_text", "text": b.content if text is None else text, "annotations": []}]}
    return {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": status, "model": body.get("model"),
        "output": [message] if done else [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        "text": {"format": {"type": "text"}},
        "usage": {"input_tokens": b.prompt_tokens, "input_tokens_details": {"cached_tokens": b.cached_tokens},
                  "output_tokens": b.completion(), "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
                  "total_tokens": b.prompt_tokens + b.completion()} if done else None,
    }


def responses(handler, body: dict, b) -> None:
    if not body.get("stream"):
        return handler.send_json(200, response_object(body, b))
    seq = iter(range(1000))
    item = {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}

    def ev(kind, **fields):
        return _sse(dict({"type": kind, "sequence_number": next(seq)}, **fields), kind)

    events = [ev("response.created", response=response_object(body, b, "in_progress")),
              ev("response.in_progress", response=response_object(body, b, "in_progress")),
              ev("response.output_item.added", output_index=0, item=item),
              ev("response.content_part.added", part=part, **where)]
    events += [ev("response.output_text.delta", delta=p, logprobs=[], **where) for p in b.pieces()]
    events += [ev("response.output_text.done", text=b.content, logprobs=[], **where),
               ev("response.content_part.done", part=dict(part, text=b.content), **where),
               ev("response.output_item.done", output_index=0, item=response_object(body, b)["output"][0]),
               ev("response.completed", response=response_object(body, b))]
    _send_events(handler, events)


def wav_seconds(data: bytes) -> float:
    rate = struct.unpack("<I", data[28:32])[0]
    at = data.find(b"data")
    return struct.unpack("<I", data[at + 4:at + 8])[0] / rate


def transcription(handler, b) -> None:
    """multipart/form-data: model, file, response_format (json, verbose_json, text)."""
    if not handler.headers.get("Authorization", "").startswith("Bearer "):
        return handler.send_json(401, {"error": {"message": "Missing bearer", "type": "invalid_request_error", "code": "invalid_api_key"}})
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length)
    boundary = re.search(r"boundary=([^;]+)", handler.headers.get("Content-Type", "")).group(1).strip('"').encode()
    fields, files = {}, {}
    for chunk in raw.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head).group(1).decode()
        (files if b"filename=" in head else fields)[name] = data if b"filename=" in head else data.decode()
    handler.fake.record(path=handler.path, headers=dict(handler.headers), body={"fields": fields, "file_bytes": len(files.get("file", b""))})
    seconds = wav_seconds(files["file"])
    text = "Hello from the fake transcriber."
    fmt = fields.get("response_format", "json")
    if fmt == "text":
        data = text.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        return handler.wfile.write(data)
    if fmt == "verbose_json":
        return handler.send_json(200, {"task": "transcribe", "language": "english", "duration": seconds, "text": text, "segments": []})
    handler.send_json(200, {"text": text, "usage": {"type": "duration", "seconds": seconds}})


ROUTES = {
    "/completions": completions,
    "/embeddings": embeddings,
    "/images/generations": images,
    "/audio/speech": speech,
    "/moderations": moderations,
    "/responses": responses,
}


def handle(handler, body: dict, behaviour) -> bool:
    """Answer a JSON request to one of these endpoints; False when the path is none of them."""
    path = handler.path.split("?")[0]
    for suffix, route in ROUTES.items():
        if path.endswith(suffix):
            route(handler, body or {}, behaviour)
            return True
    return False
