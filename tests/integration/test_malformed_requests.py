"""Malformed requests on every endpoint, through the real relay against fake upstreams: each is a 400
in the caller's format naming the field, before any upstream call and before any hold — the balance
and the holds are as they were. Unknown model names grow no cache."""
from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass

import orjson
import pytest

from relay.quota import Quota
from relay.validation.fields import MODEL_MAX_CHARS
from tests import factories
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.relay_harness import Relay, request_log
from workers.usage_fields import TEXT_LIMITS

FUNDS = 10_000_000  # µ$
GPT, CLAUDE = "gpt-4o-mini", "claude-sonnet-4-5"
HI = [{"role": "user", "content": "hi"}]


def wav(seconds: float = 1.0, rate: int = 2000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(b"\x80" * int(seconds * rate))
    return buffer.getvalue()


@dataclass(frozen=True)
class Form:
    """A multipart/form-data body."""

    fields: dict
    file: bytes | None = wav()

    def encode(self) -> tuple[bytes, str]:
        boundary = "sbtestboundary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in self.fields.items()]
        if self.file is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                         f"Content-Type: audio/wav\r\n\r\n".encode() + self.file + b"\r\n")
        return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def body(base: dict, **changes) -> dict:
    """`base` with fields changed; a field set to ... is removed."""
    out = dict(base, **changes)
    return {k: v for k, v in out.items() if v is not ...}


CHAT = {"model": GPT, "messages": HI}
COMPLETION = {"model": GPT, "prompt": "Say hi"}
EMBEDDING = {"model": GPT, "input": "text"}
IMAGE = {"model": GPT, "prompt": "a cat"}
SPEECH = {"model": GPT, "input": "Hello", "voice": "alloy"}
MODERATION = {"model": GPT, "input": "text"}
RESPONSE = {"model": GPT, "input": "hi"}
MESSAGE = {"model": CLAUDE, "max_tokens": 100, "messages": HI}
COUNT = {"model": CLAUDE, "messages": HI}
TRANSCRIPTION = {"model": GPT}

# (path, body, the field the error names; None for a body that is not JSON at all)
CASES = [
    # --- /v1/chat/completions
    ("/v1/chat/completions", b"{not json", None),
    ("/v1/chat/completions", b"[1, 2]", None),
    ("/v1/chat/completions", body(CHAT, model=...), "model"),
    ("/v1/chat/completions", body(CHAT, model=5), "model"),
    ("/v1/chat/completions", body(CHAT, model="m" * 100_000), "model"),
    ("/v1/chat/completions", body(CHAT, model="gpt-4o-mini\n\x00"), "model"),
    ("/v1/chat/completions", body(CHAT, messages=...), "messages"),
    ("/v1/chat/completions", body(CHAT, messages=[]), "messages"),
    ("/v1/chat/completions", body(CHAT, messages=[1, 2, "x"]), "messages[0]"),
    ("/v1/chat/completions", body(CHAT, messages=[{"content": "hi"}]), "messages[0].role"),
    ("/v1/chat/completions", body(CHAT, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("/v1/chat/completions", body(CHAT, messages=[{"role": "user", "content": [5]}]), "messages[0].content[0]"),
    ("/v1/chat/completions", body(CHAT, messages=[*HI, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": "f"}]}]),
     "messages[1].tool_calls[0].function"),
    ("/v1/chat/completions", body(CHAT, stream=True, stream_options="yes"), "stream_options"),
    ("/v1/chat/completions", body(CHAT, temperature="hot"), "temperature"),
    ("/v1/chat/completions", body(CHAT, temperature=-5), "temperature"),
    ("/v1/chat/completions", body(CHAT, top_p=1.5), "top_p"),
    ("/v1/chat/completions", body(CHAT, presence_penalty=3), "presence_penalty"),
    ("/v1/chat/completions", body(CHAT, stream="true"), "stream"),
    ("/v1/chat/completions", body(CHAT, stream=1), "stream"),
    ("/v1/chat/completions", body(CHAT, n="x"), "n"),
    ("/v1/chat/completions", body(CHAT, n=1000), "n"),
    ("/v1/chat/completions", body(CHAT, max_tokens=0), "max_tokens"),
    ("/v1/chat/completions", body(CHAT, max_completion_tokens="100"), "max_completion_tokens"),
    ("/v1/chat/completions", body(CHAT, stop=["s"] * 100), "stop"),
    ("/v1/chat/completions", body(CHAT, tools={"type": "function"}), "tools"),
    ("/v1/chat/completions", body(CHAT, tools=[{"type": "function", "function": "f"}]), "tools[0].function"),
    ("/v1/chat/completions", body(CHAT, user="u" * 1000), "user"),
    ("/v1/chat/completions", body(CHAT, metadata={f"k{i}": "v" for i in range(50)}), "metadata"),
    ("/v1/chat/completions", body(CHAT, metadata={"k": "v" * 10_000}), "metadata"),
    # --- /v1/completions
    ("/v1/completions", body(COMPLETION, prompt=...), "prompt"),
    ("/v1/completions", body(COMPLETION, prompt=5), "prompt"),
    ("/v1/completions", body(COMPLETION, n="x"), "n"),
    ("/v1/completions", body(COMPLETION, n=2.5), "n"),
    ("/v1/completions", body(COMPLETION, best_of="3"), "best_of"),
    ("/v1/completions", body(COMPLETION, n=3, best_of=2), "best_of"),
    ("/v1/completions", body(COMPLETION, stream=True, stream_options=[]), "stream_options"),
    ("/v1/completions", body(COMPLETION, logprobs=50), "logprobs"),
    # --- /v1/embeddings
    ("/v1/embeddings", body(EMBEDDING, input=...), "input"),
    ("/v1/embeddings", body(EMBEDDING, input=5), "input"),
    ("/v1/embeddings", body(EMBEDDING, input=["x"] * 3000), "input"),
    ("/v1/embeddings", body(EMBEDDING, dimensions=0), "dimensions"),
    # --- /v1/images/generations
    ("/v1/images/generations", body(IMAGE, prompt=5), "prompt"),
    ("/v1/images/generations", body(IMAGE, n="2"), "n"),
    ("/v1/images/generations", body(IMAGE, n=50), "n"),
    ("/v1/images/generations", body(IMAGE, size=1024), "size"),
    # --- /v1/audio/speech
    ("/v1/audio/speech", body(SPEECH, input=...), "input"),
    ("/v1/audio/speech", body(SPEECH, voice=5), "voice"),
    ("/v1/audio/speech", body(SPEECH, speed="fast"), "speed"),
    ("/v1/audio/speech", body(SPEECH, speed=10), "speed"),
    # --- /v1/audio/transcriptions and translations (multipart)
    ("/v1/audio/transcriptions", Form({}), "model"),
    ("/v1/audio/transcriptions", Form(TRANSCRIPTION, file=None), "file"),
    ("/v1/audio/transcriptions", Form({"model": "whisper\x01"}), "model"),
    ("/v1/audio/transcriptions", Form(dict(TRANSCRIPTION, temperature="hot")), "temperature"),
    ("/v1/audio/transcriptions", Form(dict(TRANSCRIPTION, temperature="5")), "temperature"),
    ("/v1/audio/transcriptions", Form(dict(TRANSCRIPTION, stream="maybe")), "stream"),
    ("/v1/audio/translations", Form(dict(TRANSCRIPTION, model="w" * 300)), "model"),
    # --- /v1/moderations
    ("/v1/moderations", body(MODERATION, input=...), "input"),
    ("/v1/moderations", body(MODERATION, input={"a": 1}), "input"),
    # --- /v1/responses
    ("/v1/responses", body(RESPONSE, input=...), "input"),
    ("/v1/responses", body(RESPONSE, input=5), "input"),
    ("/v1/responses", body(RESPONSE, input=[1, 2]), "input[0]"),
    ("/v1/responses", body(RESPONSE, instructions=5), "instructions"),
    ("/v1/responses", body(RESPONSE, stream="true"), "stream"),
    ("/v1/responses", body(RESPONSE, temperature=2.5), "temperature"),
    ("/v1/responses", body(RESPONSE, max_output_tokens=-1), "max_output_tokens"),
    ("/v1/responses", body(RESPONSE, tools="all"), "tools"),
    ("/v1/responses", body(RESPONSE, reasoning="high"), "reasoning"),
    # --- /v1/messages (Anthropic format), to a native channel and to a converting one
    ("/v1/messages", b"{", None),
    ("/v1/messages", body(MESSAGE, model="c" * 257), "model"),
    ("/v1/messages", body(MESSAGE, max_tokens=...), "max_tokens"),
    ("/v1/messages", body(MESSAGE, max_tokens="100"), "max_tokens"),
    ("/v1/messages", body(MESSAGE, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("/v1/messages", body(MESSAGE, model=GPT, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("/v1/messages", body(MESSAGE, model=GPT, system=5), "system"),
    ("/v1/messages", body(MESSAGE, system=[{"type": "text", "text": 5}]), "system[0].text"),
    ("/v1/messages", body(MESSAGE, messages=[1, 2, "x"]), "messages[0]"),
    ("/v1/messages", body(MESSAGE, model=GPT, messages=[{"role": "user", "content": [{"type": "image", "source": "x"}]}]),
     "messages[0].content[0].source"),
    ("/v1/messages", body(MESSAGE, temperature=1.5), "temperature"),
    ("/v1/messages", body(MESSAGE, stream="true"), "stream"),
    ("/v1/messages", body(MESSAGE, stop_sequences="END"), "stop_sequences"),
    ("/v1/messages", body(MESSAGE, top_k=-1), "top_k"),
    ("/v1/messages", body(MESSAGE, metadata={"user_id": "u" * 1000}), "metadata.user_id"),
    ("/v1/messages", body(MESSAGE, tool_choice="auto"), "tool_choice"),
    ("/v1/messages", body(MESSAGE, thinking={"type": "enabled", "budget_tokens": "lots"}), "thinking.budget_tokens"),
    # --- /v1/messages/count_tokens
    ("/v1/messages/count_tokens", body(COUNT, messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("/v1/messages/count_tokens", body(COUNT, model=GPT, messages=[{"role": "user", "content": {"type": "text"}}]), "messages[0].content"),
    ("/v1/messages/count_tokens", body(COUNT, system=5), "system"),
    ("/v1/messages/count_tokens", body(COUNT, tools=[5]), "tools[0]"),
    ("/v1/messages/count_tokens", body(COUNT, messages=...), "messages"),
]


@pytest.fixture(scope="module")
def upstreams():
    fakes = FakeOpenAI(), FakeAnthropic()
    yield fakes
    for fake in fakes:
        fake.close()


@pytest.fixture
def world(app, upstreams):
    openai_fake, anthropic_fake = upstreams
    openai_fake.reset_log()
    anthropic_fake.reset_log()
    factories.price(GPT, input="3", output="15")
    factories.price(CLAUDE, input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    factories.channel(openai_fake.url, models=(GPT,))
    factories.channel(anthropic_fake.url, models=(CLAUDE,), type="anthropic")
    relay = Relay(app)
    relay.app.holder.refresh()
    return relay, secret, user.account_id


def post(relay: Relay, secret: str, path: str, payload) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {secret}"}
    if isinstance(payload, Form):
        data, headers["Content-Type"] = payload.encode()
    else:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        headers["Content-Type"] = "application/json"
    reply = relay.client.post(path, data=data, headers=headers)
    raw = reply.get_data()
    try:
        return reply.status_code, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return reply.status_code, {"not json": raw[:80].decode("utf-8", "replace")}


def shape_problem(path: str, param: str | None, status: int, answer: dict) -> str | None:
    """What is wrong with a refusal, or None."""
    if status != 400:
        return f"status {status}: {str(answer)[:200]}"
    if path.startswith("/v1/messages"):
        error = answer.get("error") or {}
        dotted = re.sub(r"\[(\d+)\]", r".\1", param) if param else None
        if answer.get("type") != "error" or error.get("type") != "invalid_request_error":
            return f"not an Anthropic invalid_request_error: {answer}"
        if dotted and not error.get("message", "").startswith(dotted + ":"):
            return f"message does not name {dotted}: {error.get('message')}"
        return None
    error = answer.get("error") or {}
    if set(error) != {"message", "type", "param", "code"} or error["type"] != "invalid_request_error":
        return f"not an OpenAI invalid_request_error: {answer}"
    if error["param"] != param:
        return f"param {error['param']!r}, expected {param!r} ({error['message']})"
    return None


def test_every_malformed_body_is_a_400_in_the_callers_format_before_any_upstream_call_or_hold(world, upstreams):
    relay, secret, account_id = world
    quota = Quota(relay.redis)
    assert len(CASES) >= 40 and quota.account(account_id) == (FUNDS, 0)
    problems = []
    for path, payload, param in CASES:
        before = quota.account(account_id)
        status, answer = post(relay, secret, path, payload)
        problem = shape_problem(path, param, status, answer)
        calls = sum(len(fake.requests) for fake in upstreams)
        if problem is None and calls:
            problem = f"{calls} upstream call(s)"
        if problem is None and (quota.account(account_id) != before or quota.open_holds()):
            problem = f"money moved: {quota.account(account_id)}, {quota.open_holds()} open hold(s)"
        if problem:
            shown = payload if isinstance(payload, (bytes, Form)) else {k: (v[:40] + "…" if isinstance(v, str) and len(v) > 40 else v)
                                                                        for k, v in payload.items()}
            problems.append(f"{path} {str(shown)[:160]}: {problem}")
        for fake in upstreams:
            fake.reset_log()
    assert not problems, f"{len(problems)} of {len(CASES)} malformed requests were not refused cleanly:\n" + "\n".join(problems)


@pytest.mark.parametrize("path,payload", [
    ("/v1/chat/completions", dict(CHAT, temperature=0.2, top_p=1, n=1, stop=["x"], metadata={"k": "v"}, user="u-1",
                                  stream_options=None, tools=None, response_format={"type": "json_object"}, provider_extra={"x": 1})),
    ("/v1/completions", dict(COMPLETION, n=2, best_of=2, max_tokens=5, prompt=[[1, 2, 3]])),
    ("/v1/embeddings", dict(EMBEDDING, input=["a", "b"], dimensions=8)),
    ("/v1/moderations", dict(MODERATION, input=[{"type": "text", "text": "hi"}])),
    ("/v1/audio/transcriptions", Form(dict(TRANSCRIPTION, temperature="0.2", stream="false", response_format="json"))),
    ("/v1/messages", dict(MESSAGE, system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
                          metadata={"user_id": "u-1"}, temperature=1, tool_choice={"type": "auto"}, brand_new_field=True)),
    ("/v1/messages/count_tokens", dict(COUNT, system="be brief")),
])
def test_well_formed_bodies_with_fields_the_relay_does_not_know_still_go_through(world, upstreams, path, payload):
    relay, secret, _ = world
    status, answer = post(relay, secret, path, payload)
    assert status == 200, answer


def test_unknown_model_names_grow_no_cache(world):
    relay, secret, _ = world
    assert post(relay, secret, "/v1/chat/completions", CHAT)[0] == 200
    snapshot = relay.app.holder.current
    cached = len(snapshot._routes)
    for i in range(50):
        status, answer = post(relay, secret, "/v1/chat/completions", dict(CHAT, model=f"no-such-model-{i}"))
        assert status == 404 and answer["error"]["code"] == "model_not_found"
    assert relay.app.holder.current is snapshot and len(snapshot._routes) == cached


@pytest.fixture
def sql_world(sql_app, upstreams):
    upstreams[0].reset_log()
    factories.price(GPT, input="3", output="15")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    factories.channel(upstreams[0].url, models=(GPT,))
    relay = Relay(sql_app)
    relay.app.holder.refresh()
    return relay, secret


def test_the_longest_model_name_allowed_is_logged_the_same_on_both_sql_back_ends(sql_world):
    relay, secret = sql_world
    name = "n" * MODEL_MAX_CHARS
    reply = relay.client.post("/v1/chat/completions", json=dict(CHAT, model=name), headers={"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 404
    log = request_log(reply.headers["X-Request-Id"])  # PostgreSQL refuses text longer than its column
    assert log.model == name[:TEXT_LIMITS["model"]] and log.status == 404 and log.cost == 0
