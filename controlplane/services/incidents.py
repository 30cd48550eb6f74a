"""Incidents on the public status page, and which customer groups the page shows: every write is
audited, and drops the cached status document so the page says it within a request."""
from __future__ import annotations

from datetime import datetime

from controlplane.extensions import db
from controlplane.models import Group, Impact, Incident, utcnow
from controlplane.models.incidents import BODY_MAX, TITLE_MAX
from controlplane.queries.status import incident_dict
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit
from relay import redis_keys

IMPACTS = tuple(i.value for i in Impact)
MODELS_MAX = 50  # model names one incident may name
MODEL_NAME_MAX = 200


def forget_cached_page() -> None:
    from controlplane.runtime import runtime

    runtime().redis.delete(redis_keys.STATUS_PAGE)


def _models(models: list[str] | None) -> list[str]:
    names = sorted({m.strip() for m in models or () if m and m.strip()})
    if len(names) > MODELS_MAX:
        raise ServiceError(f"Name at most {MODELS_MAX} models (or none: every model).", "models")
    if any(len(m) > MODEL_NAME_MAX for m in names):
        raise ServiceError(f"A model name is at most {MODEL_NAME_MAX} characters.", "models")
    return names


def _fields(title: str, body: str, impact: str, models: list[str] | None) -> dict:
    title, body = (title or "").strip(), (body or "").strip()
    if not title:
        raise ServiceError("Give the incident a title (the status page shows it).", "title")
    if len(title) > TITLE_MAX:
        raise ServiceError(f"The title is at most {TITLE_MAX} characters.", "title")
    if len(body) > BODY_MAX:
        raise ServiceError(f"The note is at most {BODY_MAX:,} characters.", "body")
    if impact not in IMPACTS:
        raise ServiceError("The impact is degraded or outage.", "impact")
    return {"title": title, "body": body, "impact": impact, "models": _models(models)}


def _times(started_at: datetime | None, ended_at: datetime | None) -> tuple[datetime, datetime | None]:
    started = started_at or utcnow()
    if started > utcnow():
        raise ServiceError("The start cannot be in the future.", "started_at")
    if ended_at is not None and ended_at < started:
        raise ServiceError("The end must be after the start.", "ended_at")
    return started, ended_at


def incident_by_id(incident_id: int) -> Incident:
    row = db.session.get(Incident, incident_id)
    if row is None:
        raise NotFound(f"incident {incident_id}")
    return row


def open_incident(actor: Actor, title: str, body: str = "", impact: str = Impact.DEGRADED.value, models: list[str] | None = None,
                  started_at: datetime | None = None, ended_at: datetime | None = None) -> Incident:
    values = _fields(title, body, impact, models)
    started, ended = _times(started_at, ended_at)
    row = Incident(**values, started_at=started, ended_at=ended, created_by=actor.id, updated_at=utcnow())
    db.session.add(row)
    db.session.flush()
    audit(actor, "incident.create", "incident", row.id, after=incident_dict(row))
    commit(publish=False)
    forget_cached_page()
    return row


def update_incident(actor: Actor, row: Incident, title: str, body: str, impact: str, models: list[str] | None,
                    started_at: datetime | None, ended_at: datetime | None) -> Incident:
    values = _fields(title, body, impact, models)
    started, ended = _times(started_at or row.started_at, ended_at)
    before = incident_dict(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.started_at, row.ended_at, row.updated_at = started, ended, utcnow()
    audit(actor, "incident.update", "incident", row.id, before=before, after=incident_dict(row))
    commit(publish=False)
    forget_cached_page()
    return row


def resolve(actor: Actor, row: Incident) -> Incident:
    if row.ended_at is not None:
        raise ServiceError("This incident has ended already.", status=409)
    before = incident_dict(row)
    row.ended_at = row.updated_at = utcnow()
    audit(actor, "incident.resolve", "incident", row.id, before=before, after=incident_dict(row))
    commit(publish=False)
    forget_cached_page()
    return row


def delete_incident(actor: Actor, row: Incident) -> None:
    audit(actor, "incident.delete", "incident", row.id, before=incident_dict(row))
    db.session.delete(row)
    commit(publish=False)
    forget_cached_page()


def show_group(actor: Actor, group: Group, shown: bool) -> Group:
    """Give a customer group its own section on the public status page (its name becomes public)."""
    if group.on_status_page == shown:
        return group
    audit(actor, "group.status_page", "group", group.id, before={"on_status_page": group.on_status_page}, after={"on_status_page": shown})
    group.on_status_page = shown
    commit(publish=False)
    forget_cached_page()
    return group
