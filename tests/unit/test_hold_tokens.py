"""The hold's prompt estimate counts every kind of content part, erring high (relay/tokens.py), and
the hold's output budget is the most the reservation pays for (relay/holds.py)."""
from __future__ import annotations

import base64
import struct

from relay import holds, pricing, tokens
from relay.endpoints.base import HoldEstimate

PRICE = pricing.Price(model="m", input=3_000_000, output=15_000_000)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def pdf(pages: int, padding: int = 0) -> bytes:
    objects = b"".join(b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n" % i for i in range(pages))
    return b"%%PDF-1.7\n2 0 obj << /Type /Pages /Count %d >> endobj\n" % pages + objects + b"x" * padding


def wav(seconds: float, rate: int = 16_000) -> bytes:
    data = b"\0\0" * int(seconds * rate)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(data)) + data


def test_a_two_megabyte_pdf_is_counted_by_its_pages_not_as_eleven_tokens():
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + b64(pdf(40, 2_000_000))}}
    assert tokens.part_tokens(part) == 40 * tokens.DOCUMENT_TOKENS_PER_PAGE
    messages = [{"role": "user", "content": [{"type": "text", "text": "Summarise"}, part]}]
    assert tokens.prompt_tokens(messages) > 100_000


def test_a_pdf_whose_pages_cannot_be_counted_is_sized_by_its_bytes():
    assert tokens.document_tokens(b64(b"\x00" * 30_000)) == 10 * tokens.DOCUMENT_TOKENS_PER_PAGE


def test_audio_is_timed_from_a_wav_header_or_taken_at_a_low_bitrate():
    assert tokens.part_tokens({"type": "input_audio", "input_audio": {"data": b64(wav(10)), "format": "wav"}}) in (320, 321)  # the header rounds up
    mp3 = b"\xff\xfb" + b"\x00" * 99_998  # 100 kB of anything that is not a WAV: 50 s at the floor
    assert tokens.part_tokens({"type": "input_audio", "input_audio": {"data": b64(mp3), "format": "mp3"}}) == 50 * 32


def test_images_by_detail_and_files_by_reference():
    assert tokens.part_tokens({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}) == 85
    assert tokens.part_tokens({"type": "image_url", "image_url": {"url": "https://x/y.png"}}) == tokens.IMAGE_TOKENS
    assert tokens.part_tokens({"type": "input_file", "file_id": "file-abc"}) == tokens.FILE_REFERENCE_TOKENS
    assert tokens.part_tokens({"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                               "data": b64(pdf(3))}}) == 3 * tokens.DOCUMENT_TOKENS_PER_PAGE
    assert tokens.part_tokens({"inlineData": {"mimeType": "audio/wav", "data": b64(wav(2))}}) in (64, 65)


def test_anthropic_tool_blocks_count_their_text():
    block = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a" * 400}]}
    assert tokens.part_tokens(block) == 100
    assert tokens.part_tokens({"type": "tool_use", "id": "t", "name": "get", "input": {"q": "b" * 396}}) >= 100


def test_a_flexible_hold_reserves_between_a_minimal_answer_and_the_whole_ask():
    estimate = HoldEstimate(prompt_tokens=100, max_output_tokens=4_000, local_prompt_tokens=50, choices=2, cappable=True)
    size = holds.size(estimate, PRICE, 10_000, min_output_tokens=256)
    assert size.amount == pricing.hold_amount(100, 8_000, PRICE)
    assert size.least == pricing.hold_amount(100, 512, PRICE)
    fixed = holds.size(HoldEstimate(100, 4_000, 50), PRICE, 10_000, 256)
    assert fixed.least is None


def test_the_output_budget_is_the_most_the_reservation_pays_for():
    estimate = HoldEstimate(prompt_tokens=100, max_output_tokens=4_000, local_prompt_tokens=50, choices=2, cappable=True)
    for reserved in (pricing.hold_amount(100, 512, PRICE), 10_000, 33_333, 119_999):
        budget = holds.output_budget(estimate, reserved, PRICE, 10_000)
        assert pricing.hold_amount(100, budget * 2, PRICE) <= reserved < pricing.hold_amount(100, (budget + 1) * 2, PRICE)
    assert holds.output_budget(estimate, 10**9, PRICE, 10_000) == 4_000
