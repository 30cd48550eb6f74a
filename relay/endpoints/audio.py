"""POST /v1/audio/speech (billed per input character) and /v1/audio/transcriptions and
/v1/audio/translations (multipart uploads, billed per second of audio), to OpenAI-shaped channels.

The seconds billed are the upstream's own count when it reports one (usage of type "duration",
or the `duration` of verbose_json); otherwise the relay measures the upload (exactly for WAV).
A model with no per-character or per-minute price is billed by tokens instead.
"""
from __future__ import annotations

import math
import struct
from typing import Any

import orjson

from relay import multipart, tokens
from relay.adapters.base import Adapter, ForwardingAdapter, Operation, Target
from relay.adapters.openai import usage_from_openai
from relay.attempt import Terms
from relay.endpoints.base import HoldEstimate
from relay.endpoints.forward import Forwarded, ForwardedEndpoint, Outcome
from relay.errors import RelayError, bad_request
from relay.pricing import Price, Usage
from relay.settings import RelaySettings
from relay.upstream import HttpRequest
from relay.validation import check_form
from relay.validation.openai import SpeechBody, TranscriptionForm

ASSUMED_BYTES_PER_SECOND = 2_000  # 16 kbit/s: below any usual speech codec, so estimates err long


class SpeechEndpoint(ForwardedEndpoint):
    operation = Operation.SPEECH
    what = "audio"
    schema = SpeechBody

    def units(self, request: Forwarded, price: Price) -> Usage:
        text = request.payload["input"]
        return Usage(characters=len(text)) if price.per_1m_chars is not None else Usage(input=tokens.text_tokens(text))

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        units = self.units(request, price)
        return HoldEstimate(prompt_tokens=units.input, max_output_tokens=0, local_prompt_tokens=units.input, units=units)

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        if not body:
            raise ValueError("no audio")
        return Outcome(self.units(request, terms.price))


def wav_seconds(data: bytes) -> float | None:
    """The duration of a PCM WAV file from its header, or None when `data` is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        if chunk == b"fmt " and size >= 12:
            byte_rate = struct.unpack("<I", data[position + 16:position + 20])[0]
        elif chunk == b"data":
            size = min(size, len(data) - position - 8)
            return size / byte_rate if byte_rate else None
        position += 8 + size + (size & 1)
    return None


def whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(round(seconds, 3)))  # a part second is billed as a second


class TranscriptionEndpoint(ForwardedEndpoint):
    operation = Operation.TRANSCRIPTION
    what = "a transcription"

    def __init__(self, path: str = "/audio/transcriptions"):
        self.path = path

    def parse(self, body: bytes, environ: dict[str, Any]) -> Forwarded:
        form = multipart.parse(body, environ.get("CONTENT_TYPE"))
        spec = check_form(form.fields(), TranscriptionForm)
        upload = form.file("file")
        if upload is None or not upload.data:
            raise bad_request("You must provide the audio file.", param="file", code="missing_required_parameter")
        if spec.stream:
            raise RelayError(501, "stream_not_supported", "Streamed transcription is not available through this gateway.", param="stream")
        return Forwarded(model=spec.model, payload={"response_format": spec.response_format or "json"}, upload=form)

    def measured_seconds(self, request: Forwarded) -> float:
        data = request.upload.file("file").data  # type: ignore[union-attr]  # parse() required both
        seconds = wav_seconds(data)
        return seconds if seconds is not None else len(data) / ASSUMED_BYTES_PER_SECOND

    def estimate(self, request: Forwarded, price: Price, settings: RelaySettings) -> HoldEstimate:
        seconds = whole_seconds(self.measured_seconds(request))
        if price.per_minute_audio is not None:
            return HoldEstimate(0, 0, 0, units=Usage(audio_seconds=seconds))
        # Token-billed transcription models: audio runs well under 50 tokens a second.
        return HoldEstimate(prompt_tokens=50 * seconds, max_output_tokens=price.max_output_tokens or settings.default_hold_output_tokens,
                            local_prompt_tokens=0)

    def upstream_request(self, adapter: Adapter, target: Target, request: Forwarded) -> HttpRequest:
        form = request.upload.with_field("model", target.upstream_model)  # type: ignore[union-attr]  # parse() set it
        forwarding: ForwardingAdapter = adapter  # type: ignore[assignment]  # routes here have the capability: OpenAI-shaped
        return forwarding.forward_request(target, self.operation, form.encode(), form.content_type, self.path)

    def outcome(self, request: Forwarded, body: bytes, terms: Terms) -> Outcome:
        data = orjson.loads(body) if request.payload["response_format"] in ("json", "verbose_json", "diarized_json") else {}
        if not isinstance(data, dict):
            raise TypeError("not a transcription")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        seconds = usage.get("seconds") if usage.get("type") == "duration" else data.get("duration")
        if terms.price.per_minute_audio is not None:
            measured = float(seconds) if isinstance(seconds, (int, float)) else self.measured_seconds(request)
            return Outcome(Usage(audio_seconds=whole_seconds(measured)))
        if usage.get("type") == "tokens":
            return Outcome(usage_from_openai(usage), 0)
        return Outcome(Usage(output=tokens.text_tokens(data.get("text") or body.decode("utf-8", "replace"))))
