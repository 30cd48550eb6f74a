"""Model routes: each public model's selection strategy inside a priority tier, and aliases — a
name that stands for a list of models, tried in order (relay/steering.py). The relays get them in
the routing snapshot."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ModelRoute
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit
from relay.snapshot import SELECTION_STRATEGIES
from relay.steering import MAX_MODELS

MODEL_MAX_CHARS = 200


def describe(row: ModelRoute) -> dict:
    return {"id": row.id, "model": row.model, "strategy": row.strategy, "targets": list(row.targets or [])}


def _name(value, field: str) -> str:
    name = (value or "").strip() if isinstance(value, str) else ""
    if not name or len(name) > MODEL_MAX_CHARS or any(ch.isspace() for ch in name):
        raise ServiceError(f"Name a model: 1 to {MODEL_MAX_CHARS} characters, no spaces.", field)
    return name


def parse_targets(value, model: str, others: dict[str, ModelRoute]) -> list[str]:
    """An alias's models: a list, or text with one per line or separated by commas. `others` are
    the routes already saved, by model: an alias stands for models, never for other aliases."""
    if value in (None, ""):
        return []
    items = value if isinstance(value, list) else str(value).replace(",", "\n").splitlines()
    targets = [_name(t, "targets") for t in items if str(t).strip()]
    if len(targets) > MAX_MODELS:
        raise ServiceError(f"An alias stands for at most {MAX_MODELS} models.", "targets")
    if len(set(targets)) != len(targets):
        raise ServiceError("An alias names each model once.", "targets")
    if model in targets:
        raise ServiceError("An alias cannot stand for itself.", "targets")
    aliases = sorted(t for t in targets if (r := others.get(t)) is not None and r.targets)
    if aliases:
        raise ServiceError(f"An alias stands for models, not other aliases: {', '.join(aliases)}.", "targets")
    return targets


def all_routes() -> list[ModelRoute]:
    return list(db.session.scalars(select(ModelRoute).order_by(ModelRoute.model)))


def set_route(actor: Actor, model: str, *, strategy: str = "priority", targets=None) -> ModelRoute:
    """Create or change a model's route; an alias has `targets`."""
    model = _name(model, "model")
    strategy = (strategy or "priority").strip()
    if strategy not in SELECTION_STRATEGIES:
        raise ServiceError(f"Choose a strategy: {', '.join(SELECTION_STRATEGIES)}.", "strategy")
    routes = {r.model: r for r in all_routes()}
    names = parse_targets(targets, model, routes)
    if names and any(model in (r.targets or []) for r in routes.values()):
        raise ServiceError("Another alias stands for this model; an alias must have a name of its own.", "model")
    row = routes.get(model)
    before = describe(row) if row is not None else None
    if row is None:
        row = ModelRoute(model=model)
        db.session.add(row)
    row.strategy, row.targets = strategy, names
    db.session.flush()
    audit(actor, "model_route.set", "model_route", row.id, before=before, after=describe(row))
    commit()
    return row


def delete_route(actor: Actor, route_id: int) -> None:
    row = db.session.get(ModelRoute, route_id)
    if row is None:
        raise NotFound("No such model route.")
    audit(actor, "model_route.delete", "model_route", row.id, before=describe(row))
    db.session.delete(row)
    commit()
