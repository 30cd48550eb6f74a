"""What the operator serves, as customers see it: models that are routable now, their current
prices and the scheduled changes. Read by the public pricing page, key forms and the playground."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import Channel, ChannelStatus, Group, ModelPrice, ModelRoute, utcnow


@dataclass
class Offer:
    model: str
    current: ModelPrice | None = None
    upcoming: list[ModelPrice] = field(default_factory=list)


def _channels() -> list[Channel]:
    return list(db.session.scalars(select(Channel).where(Channel.status == ChannelStatus.ENABLED.value)))


def served_models(group: Group | None = None) -> set[str]:
    """Public model names of enabled channels (open to `group`, when given)."""
    found = set()
    for c in _channels():
        if group is not None and c.groups and group.name not in c.groups:
            continue
        found.update(c.models or ())
        found.update((c.model_map or {}).keys())
    return found


def offers(group: Group | None = None) -> list[Offer]:
    """Every served model with a price in force or scheduled, sorted by name."""
    now = utcnow()
    served = served_models(group)
    by_model: dict[str, Offer] = {}
    for row in db.session.scalars(select(ModelPrice).where(ModelPrice.model.in_(served)).order_by(ModelPrice.model, ModelPrice.effective_from)):
        offer = by_model.setdefault(row.model, Offer(row.model))
        if row.effective_from <= now:
            offer.current = row  # later rows win: the last one in force is current
        else:
            offer.upcoming.append(row)
    if group is not None and group.model_patterns:
        by_model = {m: o for m, o in by_model.items() if any(fnmatch.fnmatchcase(m, p) for p in group.model_patterns)}
    return [by_model[m] for m in sorted(by_model)]


def allowed_models(group: Group) -> list[str]:
    """Models a key of this group can call right now: served to the group, priced, allowed."""
    return [o.model for o in offers(group) if o.current is not None]


def aliases(allowed: list[str]) -> dict[str, list[str]]:
    """The operator's aliases that stand for at least one of `allowed`, each with those of its models."""
    found = {}
    for route in db.session.scalars(select(ModelRoute).order_by(ModelRoute.model)):
        usable = [m for m in route.targets or () if m in allowed]
        if usable:
            found[route.model] = usable
    return found
