"""Price list chores: JSON export and import (all or nothing), cancelling a scheduled change,
and which served models have no price (they are not routable)."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Channel, ChannelStatus, ModelPrice, utcnow
from controlplane.price_fields import PRICE_FIELDS
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit
from controlplane.services.prices import describe, set_price

FORMAT = "switchboard.prices.v1"
MAX_IMPORT = 5_000


def usd_text(micro: int | None) -> str | None:
    """µ$ as an exact, plain decimal dollar string ("2.5", "0.075"); None stays None."""
    if micro is None:
        return None
    text = format(Decimal(micro).scaleb(-6).normalize(), "f")
    return text


def visible_rows(now: datetime | None = None) -> list[ModelPrice]:
    """Per model, the price in force and every scheduled one (superseded history left out)."""
    now = now or utcnow()
    rows = list(db.session.scalars(select(ModelPrice).order_by(ModelPrice.model, ModelPrice.effective_from)))
    kept, current = [], {}
    for row in rows:
        if row.effective_from <= now:
            current[row.model] = row
    for row in rows:
        if row.effective_from > now or current.get(row.model) is row:
            kept.append(row)
    return kept


def export_document(now: datetime | None = None) -> dict:
    now = now or utcnow()
    entries = []
    for row in visible_rows(now):
        entry = {"model": row.model}
        entry.update({f.name: usd_text(getattr(row, f.name)) for f in PRICE_FIELDS})
        entry["max_output_tokens"] = row.max_output_tokens
        entry["effective_from"] = row.effective_from.isoformat()
        entries.append(entry)
    return {"format": FORMAT, "exported_at": now.isoformat(), "prices": entries}


def _same(row: ModelPrice, entry: dict) -> bool:
    for f in PRICE_FIELDS:
        given = entry.get(f.name)
        wanted = None if given in (None, "") else validation.usd(given, f.name)
        if wanted != getattr(row, f.name) and not (f.name == "per_request" and wanted is None and row.per_request == 0):
            return False
    return entry.get("max_output_tokens") in (None, "", row.max_output_tokens)


def _entries(document) -> list[dict]:
    entries = document.get("prices") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ServiceError('Give {"prices": [{"model": …, "input": …, "output": …}, …]} (an export of this page works).', "file")
    if len(entries) > MAX_IMPORT:
        raise ServiceError(f"At most {MAX_IMPORT} prices per import.", "file")
    return entries


def import_prices(actor: Actor, document, effective_from: datetime | None, reason: str | None) -> list[ModelPrice]:
    """Schedule every price in `document`, or none if any is invalid.

    An entry's own `effective_from` wins; otherwise `effective_from` applies (the same notice rules
    as one price). Entries identical to a row that already exists are skipped, so importing an
    export changes nothing.
    """
    created = []
    for index, entry in enumerate(_entries(document), start=1):
        model = str(entry.get("model") or "").strip()
        try:
            when = validation.timestamp(entry["effective_from"], "effective_from") if entry.get("effective_from") else effective_from
            if when is not None:
                existing = db.session.scalar(select(ModelPrice).where(ModelPrice.model == model, ModelPrice.effective_from == when))
                if existing is not None and _same(existing, entry):
                    continue
            prices = {f.name: entry.get(f.name) for f in PRICE_FIELDS}
            prices = {k: (None if v is None else str(v)) for k, v in prices.items()}
            created.append(set_price(actor, model, **prices, max_output_tokens=entry.get("max_output_tokens"),
                                     effective_from=when, reason=reason, commit_now=False))
        except ServiceError as error:
            db.session.rollback()
            raise ServiceError(f"Price {index} ({model or 'no model'}), {error.field or 'entry'}: {error.message}", "file", error.status) from None
    if created:
        commit()
    return created


def cancel_scheduled(actor: Actor, price_id: int) -> None:
    row = db.session.get(ModelPrice, price_id)
    if row is None:
        raise NotFound(f"price {price_id}")
    if row.effective_from <= utcnow():
        raise ServiceError("Only a scheduled price can be cancelled; this one is in force (schedule a new one instead).", status=409)
    audit(actor, "price.cancel", "model_price", row.id, before=describe(row))
    db.session.delete(row)
    commit()


def served_models() -> set[str]:
    served = set()
    for models, model_map in db.session.execute(select(Channel.models, Channel.model_map).where(Channel.status == ChannelStatus.ENABLED.value)):
        served.update(models or ())
        served.update((model_map or {}).keys())
    return served


def unpriced_models(now: datetime | None = None) -> list[str]:
    """Models enabled channels serve with no price in force: the relay answers 404 for them."""
    now = now or utcnow()
    priced = set(db.session.scalars(select(ModelPrice.model).where(ModelPrice.effective_from <= now).distinct()))
    return sorted(served_models() - priced)
