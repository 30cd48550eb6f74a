"""Model prices: effective-dated rows in µ$ per 1M tokens (and per image, per 1M characters, per
minute of audio for the non-token endpoints). Scheduling honours the notice the terms promise (7 days
by default); an earlier date needs a reason."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import ModelPrice, utcnow
from controlplane.services.base import Actor, ServiceError, audit, commit

NOTICE = timedelta(days=7)


def describe(row: ModelPrice) -> dict:
    return {
        "id": row.id,
        "model": row.model,
        "input_micro_usd_per_1m": row.input,
        "output_micro_usd_per_1m": row.output,
        "cache_read_micro_usd_per_1m": row.cache_read,
        "cache_write_micro_usd_per_1m": row.cache_write,
        "reasoning_micro_usd_per_1m": row.reasoning,
        "per_request_micro_usd": row.per_request,
        "max_output_tokens": row.max_output_tokens,
        "per_image_micro_usd": row.per_image,
        "image_prices_micro_usd": dict(row.image_prices or {}),
        "per_1m_chars_micro_usd": row.per_1m_chars,
        "per_minute_audio_micro_usd": row.per_minute_audio,
        "effective_from": row.effective_from.isoformat(),
        "reason": row.reason,
    }


def _optional(value, field) -> int | None:
    return None if value in (None, "") else validation.usd(value, field)


def parse_image_prices(value) -> dict[str, int] | None:
    """A per-image price table: {"SIZE/QUALITY": "USD"} as a dict or JSON text; "*" matches any."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ServiceError('Give image prices as JSON, like {"1024x1024/hd": "0.08", "*/*": "0.04"}.', "image_prices") from None
    if not isinstance(value, dict):
        raise ServiceError('Give image prices as a JSON object of "SIZE/QUALITY": USD.', "image_prices")
    table = {}
    for tier, usd in value.items():
        size, sep, quality = str(tier).strip().partition("/")
        if not sep or not size or not quality or "/" in quality:
            raise ServiceError(f"'{tier}' is not SIZE/QUALITY (use * for any, like 1024x1024/* or */hd).", "image_prices")
        table[f"{size}/{quality}"] = validation.usd(usd, "image_prices")
    return table


def current_price(model: str, at: datetime | None = None) -> ModelPrice | None:
    at = at or utcnow()
    return db.session.scalar(
        select(ModelPrice).where(ModelPrice.model == model, ModelPrice.effective_from <= at).order_by(ModelPrice.effective_from.desc()).limit(1)
    )


def set_price(actor: Actor, model: str, *, input: str | None = None, output: str | None = None, cache_read: str | None = None,
              cache_write: str | None = None, reasoning: str | None = None, per_request: str | None = None, max_output_tokens=None,
              per_image: str | None = None, image_prices=None, per_1m_chars: str | None = None, per_minute_audio: str | None = None,
              effective_from: datetime | None = None, reason: str | None = None, enforce_notice: bool = True,
              commit_now: bool = True) -> ModelPrice:
    """Prices are given in USD per 1M tokens (per request and per image: USD; speech: USD per 1M
    characters; transcription: USD per minute). `effective_from=None` means now.

    Token prices are required unless the model is priced by another unit, in which case they
    default to zero (a model priced per image may still bill the tokens its upstream reports).

    A change to a model that already has a price takes effect no sooner than the notice period
    unless a reason is given (the CLI's `--now` is an explicit operator decision and records one).
    `commit_now=False` leaves the commit to the caller (an import commits all its rows at once).
    """
    model = (model or "").strip()
    if not model or len(model) > 200:
        raise ServiceError("Name the model (at most 200 characters).", "model")
    now = utcnow()
    when = effective_from or now
    if when < now - timedelta(minutes=1):
        raise ServiceError("A price cannot take effect in the past.", "effective_from")
    reason = (reason or "").strip() or None
    image_prices_table = parse_image_prices(image_prices)
    by_unit = any(v not in (None, "") for v in (per_image, per_1m_chars, per_minute_audio, per_request)) or bool(image_prices_table)
    if input in (None, "") or output in (None, ""):
        if not by_unit:
            raise ServiceError("Give the input and output prices (USD per 1M tokens).", "input" if input in (None, "") else "output")
        input, output = input or "0", output or "0"
    if enforce_notice and current_price(model, now) is not None and when < now + NOTICE and not reason:
        raise ServiceError("Changing a price with less than 7 days' notice needs a reason.", "reason")
    row = ModelPrice(
        model=model,
        input=validation.usd(input, "input"),
        output=validation.usd(output, "output"),
        cache_read=_optional(cache_read, "cache_read"),
        cache_write=_optional(cache_write, "cache_write"),
        reasoning=_optional(reasoning, "reasoning"),
        per_request=_optional(per_request, "per_request") or 0,
        per_image=_optional(per_image, "per_image"),
        image_prices=image_prices_table,
        per_1m_chars=_optional(per_1m_chars, "per_1m_chars"),
        per_minute_audio=_optional(per_minute_audio, "per_minute_audio"),
        max_output_tokens=None if max_output_tokens in (None, "") else validation.non_negative_int(max_output_tokens, "max_output_tokens", minimum=1),
        effective_from=when,
        reason=reason,
        created_by=actor.id,
    )
    existing = db.session.scalar(select(ModelPrice).where(ModelPrice.model == model, ModelPrice.effective_from == when))
    if existing is not None:
        raise ServiceError("A price for this model already starts at that moment.", "effective_from", status=409)
    db.session.add(row)
    db.session.flush()
    audit(actor, "price.set", "model_price", row.id, after=describe(row))
    if commit_now:
        commit()
    return row
