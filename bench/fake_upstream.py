"""A fast fake OpenAI upstream for benchmarks: raw asyncio HTTP/1.1, keep-alive, canned bodies.

Fast enough (well over 10k requests/s on one core) that it never is the bottleneck: it parses only
the request line, Content-Length and whether the body asks to stream.

    python -m bench.fake_upstream PORT [--chunks 20] [--gap-ms 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def chat_response() -> bytes:
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! This is a benchmark reply."},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": USAGE,
    }, separators=(",", ":")).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nConnection: keep-alive\r\n\r\n" + body)


def stream_events(chunks: int) -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": "bench-model"}
    events = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": " word"}
        data = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}], usage=None)
        events.append(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")
    last = dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=None)
    events.append(b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: " + json.dumps(dict(base, choices=[], usage=USAGE), separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return [f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events]


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
MODELS = b'{"object":"list","data":[{"id":"bench-model","object":"model","created":0,"owned_by":"bench"}]}'


class Upstream(asyncio.Protocol):
    def __init__(self, options):
        self.options = options
        self.buffer = b""
        self.transport = None
        self.busy = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        self._serve()

    def _serve(self):
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            if head.startswith(b"get"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(MODELS)).encode() + b"\r\n\r\n" + MODELS)
            elif b'"stream":true' in body or b'"stream": true' in body:
                self.busy = True  # one request at a time per connection, as HTTP/1.1 clients send them
                asyncio.get_running_loop().create_task(self._stream())
            else:
                self.transport.write(self.options.response)

    async def _stream(self):
        self.transport.write(STREAM_HEAD)
        for event in self.options.events:
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(event)
            if self.options.gap:
                await asyncio.sleep(self.options.gap)
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        self.busy = False
        self._serve()

    def connection_lost(self, exc):
        self.transport = None


class Options:
    def __init__(self, chunks: int, gap_ms: float):
        self.response = chat_response()
        self.events = stream_events(chunks)
        self.gap = gap_ms / 1000


async def main(port: int, chunks: int, gap_ms: float) -> None:
    options = Options(chunks, gap_ms)
    server = await asyncio.get_running_loop().create_server(lambda: Upstream(options), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.chunks, args.gap_ms))
    except KeyboardInterrupt:
        pass
