"""What a request cost us upstream, worked out at ingestion for the dashboard's margin.

A channel's cost is configured as basis points of the model's list price before group multipliers
(`Channel.cost_bp`): resellers buy at a share of the list price, so one number per channel is what
operators know. The upstream cost of a request is its usage priced at the list price in force when
it started, times that share — the same integer arithmetic as the charge, rounded once.
"""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ModelPrice
from relay import pricing
from relay.snapshot import group_prices


def _price_at(history, when: float):
    found = None
    for price in history:
        if price.effective_from <= when:
            found = price
    return found


def usage_of(event) -> pricing.Usage:
    return pricing.Usage(input=event.input_tokens, cache_read=event.cache_read_tokens, cache_write=event.cache_write_tokens,
                         output=event.output_tokens, reasoning=event.reasoning_tokens)


def upstream_costs(events) -> dict[str, int]:
    """request_id → µ$ paid upstream, for charged requests on channels with a configured cost."""
    charged = [e for e in events if e.cost and e.channel_id and e.model]
    if not charged:
        return {}
    channel_ids = {e.channel_id for e in charged}
    shares = dict(db.session.execute(
        select(Channel.id, Channel.cost_bp).where(Channel.id.in_(channel_ids), Channel.cost_bp.is_not(None))).all())
    charged = [e for e in charged if e.channel_id in shares]
    if not charged:
        return {}
    from controlplane.snapshot import price_view

    rows = db.session.scalars(select(ModelPrice).where(ModelPrice.model.in_({e.model for e in charged})))
    histories = group_prices(price_view(r) for r in rows)
    out = {}
    for e in charged:
        price = _price_at(histories.get(e.model, ()), e.started_at)
        if price is not None:
            out[e.request_id] = pricing.cost(usage_of(e), price, shares[e.channel_id])
    return out
