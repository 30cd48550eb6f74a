"""The OpenAI endpoints beyond chat, and the Anthropic endpoints' own behaviour, end to end through
`switchboard up` with the official SDKs: completions, embeddings, images (priced per image by
size and quality), speech (per character), transcription (per second), moderations, responses
(JSON and streamed), Azure deployments, 501s before any upstream call, Anthropic-format errors,
model listing and token counting."""
from __future__ import annotations

import io
import struct
import wave

import anthropic
import openai
import pytest
import requests

from tests.e2e.api.conftest import customer
from tests.e2e.api.logs import request_log
from tests.fakes.anthropic_server import AnthropicReply
from tests.fakes.openai_endpoints import SPEECH_BYTES
from tests.fakes.openai_server import Behaviour

pytestmark = pytest.mark.e2e

EMAIL = "endpoints@example.com"


class World:
    def __init__(self, gateway, key):
        self.gateway, self.key = gateway, key
        self.oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)
        self.claude = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=30)

    def cost(self, request_id: str) -> int:
        return request_log(self.gateway, request_id).cost


@pytest.fixture(scope="module")
def world(gateway, channels) -> World:
    return World(gateway, customer(gateway, EMAIL, "20"))


def wav(seconds: float, rate: int = 2000) -> bytes:
    """Silence as 8-bit mono PCM WAV: small enough for the test gateway's body limit."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(struct.pack("<B", 128) * int(seconds * rate))
    return buffer.getvalue()


# --- OpenAI endpoints -----------------------------------------------------------------------
def test_legacy_completions_json_and_stream_are_billed_from_usage(world, fakes):
    fakes.openai.push(Behaviour(content="Once upon a time", prompt_tokens=400, completion_tokens=100))
    raw = world.oai.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=50)
    assert raw.parse().choices[0].text == "Once upon a time"
    assert world.cost(raw.headers["x-request-id"]) == (400 * 1_500_000 + 100 * 2_000_000) // 1_000_000

    fakes.openai.push(Behaviour(content="Once upon a time", prompt_tokens=400, completion_tokens=100))
    raw = world.oai.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=["Say hi"], stream=True)
    chunks = list(raw.parse())
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once upon a time"
    assert all(c.usage is None for c in chunks)  # not asked for, so not shown; billed all the same
    assert fakes.openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert world.cost(raw.headers["x-request-id"]) == 800


def test_embeddings_map_the_model_and_bill_the_input(world, fakes):
    fakes.openai.push(Behaviour(prompt_tokens=5_000))
    raw = world.oai.embeddings.with_raw_response.create(model="my-embed", input=["first text", "second text"])
    result = raw.parse()
    assert [e.embedding for e in result.data] == [[0.25, -0.5, 0.125]] * 2  # the SDK's base64 default, decoded
    assert fakes.openai.requests[-1]["body"]["model"] == "text-embedding-3-small"
    logged = request_log(world.gateway, raw.headers["x-request-id"])
    assert (logged.model, logged.upstream_model, logged.input, logged.cost) == ("my-embed", "text-embedding-3-small", 5_000, 100)


@pytest.mark.parametrize("size,quality,n,each", [
    ("1024x1024", "hd", 2, 80_000),  # exact tier
    ("1792x1024", "standard", 1, 120_000),  # SIZE/* tier
    ("1024x1792", "standard", 1, 50_000),  # no tier: the per-image price
])
def test_images_are_priced_per_image_by_size_and_quality(world, size, quality, n, each):
    raw = world.oai.images.with_raw_response.generate(model="dall-e-3", prompt="a lighthouse", size=size, quality=quality, n=n)
    assert len(raw.parse().data) == n
    assert world.cost(raw.headers["x-request-id"]) == n * each


def test_token_priced_image_models_bill_the_reported_usage(world, fakes):
    fakes.openai.push(Behaviour(prompt_tokens=50, completion_tokens=4_160))
    raw = world.oai.images.with_raw_response.generate(model="gpt-image-1", prompt="a lighthouse")
    assert raw.parse().data[0].b64_json
    assert world.cost(raw.headers["x-request-id"]) == (50 * 5_000_000 + 4_160 * 40_000_000) // 1_000_000


def test_speech_is_billed_per_character(world, fakes):
    text = "Grüße aus Zürich! " * 10  # 180 characters
    raw = world.oai.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=text)
    assert raw.parse().content == SPEECH_BYTES
    assert raw.headers["content-type"] == "audio/mpeg"
    assert world.cost(raw.headers["x-request-id"]) == (len(text) * 15_000_000 + 500_000) // 1_000_000  # 3 µ$


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK deprecates translations; the API serves them
@pytest.mark.parametrize("kind,response_format", [("transcriptions", "json"), ("transcriptions", "text"), ("translations", "verbose_json")])
def test_transcription_is_billed_per_second_of_audio(world, fakes, kind, response_format):
    create = getattr(world.oai.audio, kind).with_raw_response.create
    raw = create(model="whisper-1", file=("clip.wav", wav(2.5), "audio/wav"), response_format=response_format)
    text = raw.parse() if response_format == "text" else raw.parse().text
    assert text.strip() == "Hello from the fake transcriber."
    assert fakes.openai.requests[-1]["path"] == f"/v1/audio/{kind}"
    assert fakes.openai.requests[-1]["body"]["fields"]["model"] == "whisper-1"
    assert world.cost(raw.headers["x-request-id"]) == 3 * 100  # 2.5 s bills as 3 s at $0.006/min


def test_azure_transcription_goes_to_the_deployment_with_the_mapped_model(world, fakes):
    raw = world.oai.audio.transcriptions.with_raw_response.create(model="az-whisper", file=("clip.wav", wav(61), "audio/wav"))
    assert raw.parse().text == "Hello from the fake transcriber."
    sent = fakes.azure.azure_requests[-1]
    assert (sent["path"], sent["api_key"], sent["api_version"]) == (
        "/openai/deployments/whisper-deploy/audio/transcriptions", "sk-azure-upstream", "2024-10-21")
    assert fakes.azure.requests[-1]["body"]["fields"]["model"] == "whisper-deploy"
    assert world.cost(raw.headers["x-request-id"]) == 61 * 100


def test_moderations_default_their_model_and_charge_per_request(world, fakes):
    raw = world.oai.moderations.with_raw_response.create(input="Is this fine?")
    assert raw.parse().results[0].flagged is False
    assert fakes.openai.requests[-1]["body"]["model"] == "omni-moderation-latest"
    assert world.cost(raw.headers["x-request-id"]) == 100


def test_responses_json_and_stream_are_billed_from_their_usage(world, fakes):
    usage = dict(prompt_tokens=2_000, cached_tokens=1_000, completion_tokens=300, reasoning_tokens=100)
    expected = (1_000 * 2_500_000 + 1_000 * 1_250_000 + 300 * 10_000_000) // 1_000_000
    fakes.openai.push(Behaviour(content="A calm sea.", **usage))
    raw = world.oai.responses.with_raw_response.create(model="gpt-4o", input="Describe the sea.", instructions="Be brief.")
    response = raw.parse()
    assert response.output_text == "A calm sea."
    assert response.usage.input_tokens_details.cached_tokens == 1_000
    assert world.cost(raw.headers["x-request-id"]) == expected

    fakes.openai.push(Behaviour(content="A calm sea.", **usage))
    raw = world.oai.responses.with_raw_response.create(model="gpt-4o", input=[{"role": "user", "content": "Describe the sea."}], stream=True)
    events = list(raw.parse())
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "A calm sea."
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens == 300
    assert world.cost(raw.headers["x-request-id"]) == expected


def test_azure_responses_use_the_resource_level_path(world, fakes):
    raw = world.oai.responses.with_raw_response.create(model="az-responses", input="Hi")
    assert raw.parse().output_text == "Hello from the fake upstream."
    sent = fakes.azure.azure_requests[-1]
    assert (sent["path"], sent["api_version"]) == ("/openai/responses", "2025-04-01-preview")
    assert fakes.azure.requests[-1]["body"]["model"] == "resp-deploy"


@pytest.mark.parametrize("call", [
    lambda oai: oai.responses.create(model="claude-x", input="Hi"),
    lambda oai: oai.embeddings.create(model="gem-x", input="Hi"),
    lambda oai: oai.chat.completions.create(model="claude-x", n=2, messages=[{"role": "user", "content": "Hi"}]),
], ids=["responses-on-anthropic", "embeddings-on-gemini", "n2-on-anthropic"])
def test_what_a_channel_type_cannot_serve_is_501_before_any_upstream_call(world, fakes, call):
    with pytest.raises(openai.APIStatusError) as refused:
        call(world.oai)
    assert refused.value.status_code == 501
    assert fakes.anthropic.requests == [] and fakes.gemini.requests == []


# --- Anthropic endpoints --------------------------------------------------------------------
def test_anthropic_errors_arrive_as_the_anthropic_sdks_exception_classes(world, gateway):
    with pytest.raises(anthropic.AuthenticationError) as e401:
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0).messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e401.value.body["type"] == "error" and e401.value.body["error"]["type"] == "authentication_error"
    assert "request id: req_" in e401.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as e404:
        world.claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e404.value.body["error"]["type"] == "not_found_error"
    response = requests.post(gateway.url + "/v1/messages", headers={"x-api-key": world.key, "anthropic-version": "2023-06-01"},
                             json={"model": "claude-x", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": response.json()["error"]["message"]}
    assert "max_tokens" in response.json()["error"]["message"]


def test_anthropic_model_listing_shows_what_the_key_may_use(world):
    listed = [m.id for m in world.claude.models.list()]
    assert "claude-x" in listed and "gem-x" in listed and "gpt-4o" in listed
    assert all(m.type == "model" for m in world.claude.models.list())


def test_count_tokens_is_native_on_anthropic_and_local_elsewhere_and_free(world, fakes):
    messages = [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]
    native = world.claude.messages.count_tokens(model="claude-x", messages=messages)
    assert fakes.anthropic.requests[-1]["path"] == "/v1/messages/count_tokens"
    assert fakes.anthropic.requests[-1]["body"]["model"] == "claude-sonnet-4-5"
    local = world.claude.messages.count_tokens(model="gem-x", messages=messages)
    assert native.input_tokens > 0 and 5 < local.input_tokens < 40
    assert fakes.gemini.requests == []


def test_claude_code_sized_max_tokens_are_bounded_by_the_models_output_cap(world, fakes):
    message = world.claude.messages.create(model="gem-x", max_tokens=32_000, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == "Hello from the fake upstream."
    assert fakes.gemini.generate_requests()[-1]["body"]["generationConfig"]["maxOutputTokens"] == 8192


def test_a_failure_mid_stream_is_an_anthropic_error_event_and_bills_what_was_delivered(world, fakes):
    fakes.anthropic.push(AnthropicReply(text="one two three four", error_event_after=5))
    with pytest.raises(anthropic.APIStatusError) as failed:
        with world.claude.messages.stream(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "Count"}]) as events:
            request_id = events.response.headers["x-request-id"]
            for _ in events:
                pass
    assert failed.value.body["error"]["type"] == "api_error", failed.value.body
    logged = request_log(world.gateway, request_id)
    assert (logged.status, logged.error_code, logged.usage_source) == (502, "upstream_stream_interrupted", "local")
    assert logged.output > 0


def test_an_overload_before_any_content_is_a_clean_retryable_failure_and_free(world, fakes):
    fakes.anthropic.push(AnthropicReply(error_event_after=2))  # message_start, ping, then overloaded
    with pytest.raises(anthropic.RateLimitError) as failed:
        with world.claude.messages.stream(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "x"}]) as events:
            list(events)
    logged = request_log(world.gateway, failed.value.response.headers["x-request-id"])
    assert (logged.status, logged.cost) == (429, 0)


@pytest.mark.parametrize("reply,status,sdk_error", [
    (AnthropicReply(status=529, error={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), 429, anthropic.RateLimitError),
    (AnthropicReply(status=400, error={"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}),
     400, anthropic.BadRequestError),
    (AnthropicReply(status=401, error={"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
     503, anthropic.ServiceUnavailableError),
], ids=["overloaded", "bad-request", "dead-upstream-key"])
def test_upstream_errors_are_classified_and_never_charged(world, fakes, reply, status, sdk_error):
    fakes.anthropic.push(*[reply] * 3)
    with pytest.raises(sdk_error) as failed:
        world.claude.messages.with_raw_response.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == status
    assert "sk-anthropic" not in str(failed.value.body) and "127.0.0.1" not in str(failed.value.body)
    logged = request_log(world.gateway, failed.value.response.headers["x-request-id"])
    assert (logged.status, logged.cost) == (status, 0)
