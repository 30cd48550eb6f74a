"""multipart/form-data uploads (audio): fields read, the model field rewritten without touching
the file's bytes, malformed bodies refused with 400; and audio length measured from WAV headers."""
from __future__ import annotations

import io
import wave

import pytest

from relay import multipart
from relay.endpoints.audio import wav_seconds, whole_seconds
from relay.errors import RelayError

AUDIO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"


def form_body(boundary: str = "XyZ") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
            ).encode() + AUDIO + (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nverbose_json\r\n"
                                  f"--{boundary}--\r\n").encode()


def test_fields_and_files_are_read_and_the_model_is_rewritten_leaving_the_file_as_it_was():
    form = multipart.parse(form_body(), 'multipart/form-data; boundary="XyZ"')
    assert form.field("model") == "whisper-1" and form.field("response_format") == "verbose_json"
    assert form.file("file").filename == "clip.wav" and form.file("file").data == AUDIO
    rewritten = form.with_field("model", "whisper-deploy")
    again = multipart.parse(rewritten.encode(), rewritten.content_type)
    assert again.field("model") == "whisper-deploy" and again.file("file").data == AUDIO
    assert rewritten.encode() == form_body().replace(b"whisper-1", b"whisper-deploy")


@pytest.mark.parametrize("body,content_type", [
    (form_body(), "application/json"),
    (form_body(), "multipart/form-data"),
    (form_body()[:-10], "multipart/form-data; boundary=XyZ"),
    (b"--XyZ\r\nno separator here\r\n--XyZ--\r\n", "multipart/form-data; boundary=XyZ"),
])
def test_malformed_uploads_are_400s(body, content_type):
    with pytest.raises(RelayError) as refused:
        multipart.parse(body, content_type)
    assert refused.value.status == 400


def wav(seconds: float, rate: int, width: int, channels: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * int(seconds * rate) * width * channels)
    return out.getvalue()


@pytest.mark.parametrize("seconds,rate,width,channels", [(2.5, 8000, 2, 1), (61, 1000, 1, 1), (0.2, 44100, 2, 2)])
def test_wav_duration_comes_from_the_header(seconds, rate, width, channels):
    assert wav_seconds(wav(seconds, rate, width, channels)) == pytest.approx(seconds, abs=1e-3)


def test_not_a_wav_and_part_seconds():
    assert wav_seconds(b"ID3\x04 an mp3") is None
    assert (whole_seconds(2.0), whole_seconds(2.0001), whole_seconds(2.01), whole_seconds(0)) == (2, 2, 3, 1)
