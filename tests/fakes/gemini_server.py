"""A fake Gemini upstream (Generative Language API v1beta): generateContent, streamGenerateContent
with alt=sse, countTokens, models.

Like the real API it refuses unknown fields (top level, generationConfig, function parameter
schemas), empty parts, roles other than user/model, and — as Gemini 3 does — a functionCall sent
back without the thought signature it was issued with. Scripted with `GeminiReply`s.
"""
from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass, field

from tests.fakes.http import FakeServer, Handler

TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent"}
GENERATION = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "seed", "presencePenalty",
              "frequencyPenalty", "responseMimeType", "responseSchema", "thinkingConfig", "responseLogprobs", "logprobs"}
SCHEMA = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required",
          "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
          "default", "items", "minimum", "maximum"}
PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}


@dataclass
class GeminiReply:
    status: int = 200
    text: str = "Hello from the fake upstream."
    thought: str | None = None
    function_calls: list = field(default_factory=list)  # [{"name": ..., "args": {...}}]
    finish_reason: str = "STOP"
    prompt_tokens: int = 30
    cached_tokens: int = 0
    candidates_tokens: int | None = None  # default: one per text piece and call
    thoughts_tokens: int = 0
    blocked: bool = False  # the prompt is blocked: no candidates, promptFeedback.blockReason
    error: dict | None = None
    reset_after_events: int | None = None

    def pieces(self) -> list[str]:
        words = self.text.split(" ") if self.text else []
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def usage(self, final: bool = True) -> dict:
        usage = {"promptTokenCount": self.prompt_tokens}
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        if final:
            candidates = self.candidates_tokens if self.candidates_tokens is not None else len(self.pieces()) + len(self.function_calls)
            usage["candidatesTokenCount"] = candidates
            if self.thoughts_tokens:
                usage["thoughtsTokenCount"] = self.thoughts_tokens
            usage["totalTokenCount"] = self.prompt_tokens + candidates + self.thoughts_tokens
        return usage


def check_schema(schema, where: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    unknown = set(schema) - SCHEMA
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'{where}\''
    if isinstance(schema.get("type"), list):
        return f"{where}.type: Proto field is not repeating, cannot start list"
    for name, sub in (schema.get("properties") or {}).items():
        problem = check_schema(sub, f"{where}.properties[{name}]")
        if problem:
            return problem
    return check_schema(schema.get("items"), f"{where}.items")


def check_request(body, issued: dict[str, str]) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    unknown = (set(body) - TOP_LEVEL) or (set(body.get("generationConfig") or {}) - GENERATION)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}"'
    if not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified"
    for n, content in enumerate(body["contents"]):
        if content.get("role") not in (None, "user", "model"):  # unset is the user
            return f"Please use a valid role: user, model. (contents[{n}])"
        if not content.get("parts"):
            return f"* GenerateContentRequest.contents[{n}].parts: contents.parts must not be empty."
        for part in content["parts"]:
            data_fields = set(part) & PART_FIELDS
            if len(data_fields) != 1 or part.get("text") == "":
                return f"* GenerateContentRequest.contents[{n}].parts: a part must hold exactly one non-empty data field"
            call = part.get("functionCall")
            if call and call.get("name") in issued and part.get("thoughtSignature") != issued[call["name"]]:
                return f"Function call is missing a thought_signature in functionCall parts (contents[{n}])."
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            problem = check_schema(declaration.get("parameters"), f"tools.function_declarations[{declaration.get('name')}].parameters")
            if problem:
                return problem
    return None


class GeminiHandler(Handler):
    def do_GET(self):
        if self.path.split("?")[0].rstrip("/").endswith("/v1beta/models"):
            self.fake.record(path=self.path, headers=dict(self.headers), body=None)
            return self.send_json(200, {"models": [{"name": f"models/{m}", "displayName": m} for m in self.fake.models]})
        self.error(404, "NOT_FOUND", "not found")

    def error(self, code: int, status: str, message: str, details: list | None = None):
        self.send_json(code, {"error": {"code": code, "message": message, "status": status, "details": details or []}})

    def do_POST(self):
        body = self.read_json()
        self.fake.record(path=self.path, headers=dict(self.headers), body=body)
        reply = self.fake.next_reply()
        key = self.headers.get("x-goog-api-key")
        if not key:
            return self.error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
        if key == "bad-key":
            return self.error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                              [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}])
        path, _, query = self.path.partition("?")
        model, _, method = path.rpartition("/models/")[2].partition(":")
        if method == "countTokens":
            return self.send_json(200, {"totalTokens": len(json.dumps(body)) // 4})
        if method not in ("generateContent", "streamGenerateContent"):
            return self.error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta")
        if reply.status != 200:
            return self.send_json(reply.status, reply.error or {"error": {"code": reply.status, "message": "fake failure", "status": "INTERNAL"}})
        problem = check_request(body, self.fake.signatures)
        if problem:
            return self.error(400, "INVALID_ARGUMENT", problem)
        if method == "streamGenerateContent":
            if "alt=sse" not in query:
                return self.error(400, "INVALID_ARGUMENT", "this fake speaks only alt=sse streams")
            return self.stream(reply, model)
        return self.send_json(200, self.response(reply, model, self.parts(reply), True))

    def parts(self, r: GeminiReply) -> list[dict]:
        parts = [{"text": r.thought, "thought": True}] if r.thought else []
        if r.text:
            parts.append({"text": r.text})
        return parts + self.call_parts(r)

    def call_parts(self, r: GeminiReply) -> list[dict]:
        parts = []
        for i, call in enumerate(r.function_calls):
            signature = base64.b64encode(f"sig-{call['name']}-{i}".encode()).decode()  # bytes, as Google sends them
            self.fake.signatures[call["name"]] = signature
            parts.append({"functionCall": {"name": call["name"], "args": call["args"]}, "thoughtSignature": signature})
        return parts

    def response(self, r: GeminiReply, model: str, parts: list[dict], final: bool) -> dict:
        body = {"usageMetadata": r.usage(final), "modelVersion": model, "responseId": "resp-fake"}
        if r.blocked:
            body["promptFeedback"] = {"blockReason": "SAFETY"}
            return body
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
        if final:
            candidate["finishReason"] = r.finish_reason
        body["candidates"] = [candidate]
        return body

    def stream(self, r: GeminiReply, model: str):
        if r.blocked:
            chunks = [self.response(r, model, [], True)]
        else:
            # Thoughts first, then text piece by piece; the finishing chunk (with the function
            # calls, whole, when there are any) carries the final usage.
            chunks = [self.response(r, model, [{"text": r.thought, "thought": True}], False)] if r.thought else []
            pieces = [[{"text": p}] for p in r.pieces()]
            finishing = self.call_parts(r) if r.function_calls else (pieces.pop() if pieces else [{"text": ""}])
            chunks += [self.response(r, model, parts, False) for parts in pieces]
            chunks.append(self.response(r, model, finishing, True))
        self.start_stream()
        for n, chunk in enumerate(chunks):
            if r.reset_after_events is not None and n >= r.reset_after_events:
                self.reset()
                return
            try:
                self.send_chunk(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return
        self.end_stream()


class FakeGemini(FakeServer):
    handler_class = GeminiHandler

    def __init__(self, models: list[str] | None = None):
        super().__init__()
        self.default = GeminiReply()
        self.queue: deque[GeminiReply] = deque()
        self.models = models or ["gemini-2.5-flash", "gemini-2.5-pro"]
        self.signatures: dict[str, str] = {}  # function name → the thought signature last issued with a call

    @property
    def url(self) -> str:
        return self.origin

    def push(self, *replies: GeminiReply) -> None:
        with self.lock:
            self.queue.extend(replies)

    def next_reply(self) -> GeminiReply:
        with self.lock:
            return self.queue.popleft() if self.queue else self.default

    def generate_requests(self) -> list[dict]:
        return [r for r in self.requests if "generateContent" in r["path"] or "GenerateContent" in r["path"]]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.queue.clear()
        self.default = GeminiReply()
