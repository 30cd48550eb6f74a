"""Gemini's own API through `switchboard up`, with Google's `google-genai` SDK as the client and raw
HTTP where the SDK cannot go (the JSON-array stream, `?key=`, malformed bodies): generateContent
and streamGenerateContent over every channel type (native on gemini, converted elsewhere), tools
over two turns, the three ways to send the key, Google-format errors, exact charges, free
countTokens and the model list."""
from __future__ import annotations

import json

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.e2e.api.batch import cli_all
from tests.e2e.api.conformance import (
    CHANNELS,
    PRICE,
    TEXT,
    TIME,
    UPSTREAM_MODEL,
    WEATHER,
    charge,
    expected_usage,
    reply,
)
from tests.e2e.api.conftest import customer
from tests.e2e.api.logs import request_log
from tests.fakes.gemini_server import GeminiReply

pytestmark = pytest.mark.e2e

EMAIL = "gemini-callers@example.com"
TOOLS = [types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Weather in a city", parameters=types.Schema(
        type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING),
                                            "unit": types.Schema(type=types.Type.STRING, enum=["c", "f"])}, required=["city"])),
    types.FunctionDeclaration(name="get_time", parameters_json_schema={"type": "object", "properties": {"zone": {"type": "string"}}}),
])]


# Channels of this module's own, one per type, on the suite's fakes: other modules' tests may leave
# the shared channels' keys dead (a 401 from an upstream retires its key).
PUBLIC_MODEL = {c: f"gm-{c}" for c in CHANNELS}


@pytest.fixture(scope="module")
def key(gateway, fakes, channels) -> str:
    commands = [("channel", "add", "--name", f"gemini-callers-{c}", "--type", c, "--base-url", fakes.of(c).url, "--keys", f"sk-{c}-upstream",
                 "--models", "", "--model-map", f"{PUBLIC_MODEL[c]}={UPSTREAM_MODEL[c]}") for c in CHANNELS]
    commands += [("price", "set", PUBLIC_MODEL[c], "--input", PRICE[0], "--output", PRICE[1], "--cache-read", PRICE[2],
                  "--cache-write", PRICE[3], "--now") for c in CHANNELS]
    cli_all(gateway, commands)
    return customer(gateway, EMAIL, "20")


@pytest.fixture(scope="module")
def client(gateway, key) -> genai.Client:
    options = types.HttpOptions(base_url=gateway.url, retry_options=types.HttpRetryOptions(attempts=1), timeout=30_000)
    return genai.Client(api_key=key, http_options=options)


def request_id_of(response) -> str:
    return response.sdk_http_response.headers["x-request-id"]


class Seen:
    """What a caller saw of one answer: text, function calls, finish reason, usage, request id, and
    the model's parts, which it keeps in its history (thought signatures included)."""

    def __init__(self):
        self.text, self.calls, self.parts = "", [], []
        self.finish = self.usage = self.request_id = None

    def take(self, response) -> None:
        self.request_id = self.request_id or request_id_of(response)
        candidate = response.candidates[0] if response.candidates else None
        for part in (candidate.content.parts or ()) if candidate and candidate.content else ():
            if part.thought:
                continue
            self.parts.append(part)
            self.text += part.text or ""
            if part.function_call:
                self.calls.append((part.function_call.id, part.function_call.name, part.function_call.args))
        self.finish = (candidate.finish_reason if candidate else None) or self.finish
        self.usage = response.usage_metadata or self.usage


def generate(client: genai.Client, model: str, contents, stream: bool, config: types.GenerateContentConfig | None = None) -> Seen:
    seen = Seen()
    if stream:
        for chunk in client.models.generate_content_stream(model=model, contents=contents, config=config):
            seen.take(chunk)
    else:
        seen.take(client.models.generate_content(model=model, contents=contents, config=config))
    return seen


def assert_charged(gateway, request_id: str, channel: str) -> None:
    logged = request_log(gateway, request_id)
    assert (logged.status, logged.model, logged.upstream_model) == (200, PUBLIC_MODEL[channel], UPSTREAM_MODEL[channel])
    usage = expected_usage(channel)
    assert (logged.input, logged.cache_read, logged.cache_write, logged.output, logged.reasoning) == (
        usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning)
    assert logged.cost == charge(usage)
    version, _, action = logged.endpoint.partition("/models/{model}:")
    assert (version, action) in {(v, a) for v in ("/v1", "/v1beta") for a in ("generateContent", "streamGenerateContent")}


def last_upstream(fakes, channel: str) -> dict:
    fake = fakes.of(channel)
    if channel == "gemini":
        return fake.generate_requests()[-1]
    if channel == "anthropic":
        return fake.message_requests()[-1]
    return fake.chat_requests()[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_generate_content_over_every_channel_type(gateway, fakes, client, channel, stream):
    fakes.of(channel).push(reply(channel))
    config = types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=500, temperature=0.5)
    seen = generate(client, PUBLIC_MODEL[channel], "Hi", stream, config)
    assert (seen.text, seen.calls, seen.finish) == (TEXT, [], types.FinishReason.STOP)
    expected = expected_usage(channel)
    usage = seen.usage
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count or 0) == (
        expected.input + expected.cache_read + expected.cache_write, expected.output, expected.reasoning)
    upstream = last_upstream(fakes, channel)
    if channel == "gemini":  # native: the body as the SDK sent it, the model in the URL mapped
        assert f"/models/{UPSTREAM_MODEL[channel]}:" in upstream["path"]
        assert upstream["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."
        assert upstream["body"]["generationConfig"] == {"maxOutputTokens": 500, "temperature": 0.5}
        assert upstream["headers"]["x-goog-api-key"] == "sk-gemini-upstream"
    elif channel == "anthropic":
        assert (upstream["body"]["system"], upstream["body"]["max_tokens"]) == ([{"type": "text", "text": "Be brief."}], 500)
    else:
        assert upstream["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert upstream["body"]["max_tokens"] == 500
    assert_charged(gateway, seen.request_id, channel)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_function_calls_and_their_responses_make_the_round_trip(gateway, fakes, client, channel, stream):
    fake = fakes.of(channel)
    fake.push(reply(channel, calls=[("get_weather", WEATHER), ("get_time", TIME)]), reply(channel))
    model = PUBLIC_MODEL[channel]
    config = types.GenerateContentConfig(tools=TOOLS)
    question = types.Content(role="user", parts=[types.Part(text="Weather and time in Zürich?")])
    first = generate(client, model, [question], stream, config)
    assert [(name, args) for _, name, args in first.calls] == [("get_weather", WEATHER), ("get_time", TIME)]
    results = {"get_weather": {"temperature": 21}, "get_time": {"time": "12:00"}}
    # The model's parts go back as they came (on gemini they carry the thought signatures Gemini 3 requires).
    history = [question, types.Content(role="model", parts=first.parts),
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(id=i, name=n, response=results[n]))
                                                 for i, n, _ in first.calls])]
    second = generate(client, model, history, stream, config)
    assert (second.text, second.calls, second.finish) == (TEXT, [], types.FinishReason.STOP)
    sent = last_upstream(fakes, channel)["body"]
    if channel in ("openai", "azure"):
        tool_messages = [m for m in sent["messages"] if m["role"] == "tool"]
        issued = [c["id"] for m in sent["messages"] if m["role"] == "assistant" for c in m["tool_calls"]]
        assert [m["tool_call_id"] for m in tool_messages] == issued
        assert json.loads(tool_messages[0]["content"]) == {"temperature": 21}
    for request_id in (first.request_id, second.request_id):
        assert_charged(gateway, request_id, channel)


@pytest.mark.parametrize("channel", ["gemini", "openai"])
def test_a_stream_without_alt_sse_is_one_json_array(gateway, fakes, key, channel):
    fakes.of(channel).push(reply(channel))
    url = f"{gateway.url}/v1beta/models/{PUBLIC_MODEL[channel]}:streamGenerateContent"
    response = requests.post(url, headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "Hi"}]}]}, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    events = response.json()
    assert isinstance(events, list) and len(events) > 1
    text = "".join(p.get("text", "") for e in events for c in e.get("candidates", []) for p in c["content"].get("parts", [])
                   if not p.get("thought"))
    assert text == TEXT
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == expected_usage(channel).output
    assert_charged(gateway, response.headers["x-request-id"], channel)


def test_sse_events_are_framed_as_google_frames_them(gateway, fakes, key):
    url = f"{gateway.url}/v1beta/models/{PUBLIC_MODEL['openai']}:streamGenerateContent?alt=sse"
    response = requests.post(url, headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "Hi"}]}]}, timeout=30)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.content.split(b"\r\n\r\n") if e]
    assert all(e.startswith(b"data: {") for e in events)


@pytest.mark.parametrize("how", ["x-goog-api-key", "query", "bearer"])
def test_the_key_is_taken_from_the_header_the_query_or_bearer(gateway, fakes, key, how):
    url = f"{gateway.url}/v1beta/models/{PUBLIC_MODEL['gemini']}:generateContent"
    headers = {"x-goog-api-key": key} if how == "x-goog-api-key" else {"Authorization": f"Bearer {key}"} if how == "bearer" else {}
    params = {"key": key} if how == "query" else None
    response = requests.post(url, headers=headers, params=params, json={"contents": [{"parts": [{"text": "Hi"}]}]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == TEXT
    assert "key=" not in fakes.gemini.generate_requests()[-1]["path"]  # the caller's key never goes upstream


def google_error(response, status: int, google_status: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, google_status)
    assert f"(request id: {response.headers['x-request-id']})" in error["message"]
    return error


@pytest.mark.parametrize("path,body,headers,status,google_status", [
    ("/v1beta/models/gm-gemini:generateContent", {"contents": [{"parts": [{"text": "Hi"}]}]}, {"x-goog-api-key": "sk-sb-wrong"},
     401, "UNAUTHENTICATED"),
    ("/v1beta/models/gm-gemini:generateContent", {"contents": [{"parts": [{"text": "Hi"}]}]}, {}, 401, "UNAUTHENTICATED"),
    ("/v1beta/models/gm-gemini:generateContent", {"contents": []}, None, 400, "INVALID_ARGUMENT"),
    ("/v1beta/models/gm-gemini:generateContent", {"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, None, 400,
     "INVALID_ARGUMENT"),
    ("/v1beta/models/no-such-model:generateContent", {"contents": [{"parts": [{"text": "Hi"}]}]}, None, 404, "NOT_FOUND"),
    ("/v1beta/models/gm-gemini:embedContent", {}, None, 404, "NOT_FOUND"),
], ids=["bad-key", "no-key", "no-contents", "bad-role", "unknown-model", "unknown-action"])
def test_errors_are_in_googles_format_and_never_reach_the_upstream(gateway, fakes, key, path, body, headers, status, google_status):
    response = requests.post(gateway.url + path, headers={"x-goog-api-key": key} if headers is None else headers, json=body, timeout=30)
    google_error(response, status, google_status)
    assert fakes.gemini.requests == []


def test_sdk_raises_its_own_error_classes(client, fakes):
    with pytest.raises(genai_errors.ClientError) as failed:
        client.models.generate_content(model="no-such-model", contents="Hi")
    assert failed.value.code == 404 and failed.value.status == "NOT_FOUND"


def test_an_upstream_rejection_is_a_google_error_and_free(gateway, fakes, key):
    fakes.gemini.push(GeminiReply(status=400, error={"error": {"code": 400, "message": "Request contains an invalid argument.",
                                                               "status": "INVALID_ARGUMENT"}}))
    url = f"{gateway.url}/v1beta/models/{PUBLIC_MODEL['gemini']}:generateContent"
    response = requests.post(url, headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "Hi"}]}]}, timeout=30)
    error = google_error(response, 400, "INVALID_ARGUMENT")
    assert "invalid argument" in error["message"]
    assert request_log(gateway, response.headers["x-request-id"]).cost == 0


def test_a_stream_cut_mid_way_ends_with_a_google_error_event(gateway, fakes, key):
    fakes.gemini.push(GeminiReply(text="one two three four", reset_after_events=2))
    url = f"{gateway.url}/v1beta/models/{PUBLIC_MODEL['gemini']}:streamGenerateContent?alt=sse"
    response = requests.post(url, headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "Count"}]}]}, timeout=30)
    events = [json.loads(e[len(b"data: "):]) for e in response.content.split(b"\r\n\r\n") if e]
    assert events[0]["candidates"][0]["content"]["parts"][0]["text"] == "one"
    assert events[-1]["error"]["status"] == "UNAVAILABLE"
    logged = request_log(gateway, response.headers["x-request-id"])
    assert (logged.status, logged.error_code, logged.usage_source) == (502, "upstream_stream_interrupted", "local")


@pytest.mark.parametrize("channel", ["gemini", "anthropic"])
def test_count_tokens_is_native_on_gemini_and_local_elsewhere_and_free(gateway, fakes, client, channel):
    counted = client.models.count_tokens(model=PUBLIC_MODEL[channel], contents="How many tokens is this sentence, roughly?")
    assert counted.total_tokens > 0
    request_id = counted.sdk_http_response.headers["x-request-id"]
    if channel == "gemini":
        assert fakes.gemini.requests[-1]["path"] == f"/v1beta/models/{UPSTREAM_MODEL['gemini']}:countTokens"
    else:
        assert fakes.anthropic.requests == []
    balance = gateway.balance(EMAIL)["balance_micro_usd"]
    client.models.count_tokens(model=PUBLIC_MODEL[channel], contents="again")
    assert gateway.balance(EMAIL)["balance_micro_usd"] == balance
    assert request_id.startswith("req_")


def test_the_model_list_shows_what_the_key_may_use(client, gateway, key):
    listed = {m.name: m for m in client.models.list(config={"page_size": 3})}  # paged: the SDK follows nextPageToken
    assert {f"models/{PUBLIC_MODEL[c]}" for c in CHANNELS} | {"models/gem-x"} <= set(listed)
    assert "generateContent" in listed["models/gem-x"].supported_actions
    assert listed["models/gem-x"].output_token_limit == 8192
    assert client.models.get(model="gem-x").name == "models/gem-x"
    missing = requests.get(f"{gateway.url}/v1beta/models/no-such-model", params={"key": key}, timeout=30)
    google_error(missing, 404, "NOT_FOUND")


def test_the_v1_path_variant_is_served(gateway, fakes, key):
    url = f"{gateway.url}/v1/models/{PUBLIC_MODEL['gemini']}:generateContent"
    response = requests.post(url, headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "Hi"}]}]}, timeout=30)
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == TEXT
