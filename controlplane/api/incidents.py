"""Admin API: the status page — its figures by channel, and the incidents it shows (an alerting
system can open and resolve them)."""
from __future__ import annotations

from datetime import datetime

from flask import jsonify, request
from sqlalchemy import select

from controlplane.api import READERS, WRITERS, actor, payload, route
from controlplane.api.schema import PAGE, STR, WHEN, arr, described, obj
from controlplane.models import Incident
from controlplane.queries import status
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.services import ServiceError
from controlplane.services import incidents as incident_service
from controlplane.validation import timestamp

FIELDS = dict(title=described(STR, "≤ 200 characters"), body=described(STR, "≤ 2,000 characters"), impact=described(STR, "degraded or outage"),
              models=described(arr(STR), "public model names; empty: every model"), started_at=WHEN, ended_at=WHEN)


def _when(data: dict, name: str, default: datetime | None) -> datetime | None:
    if name not in data:
        return default
    value = data[name]
    return timestamp(value, name) if value else None


def _models(data: dict, default: list[str]) -> list[str]:
    value = data.get("models", default)
    if not isinstance(value, list):
        raise ServiceError("models is a list of model names.", "models")
    return [str(m) for m in value]


@route("/v1/status", "GET", summary="The status page's figures per model, shown group and channel, with incidents", tag="status", roles=READERS)
def get_status():
    rep = status.report(with_channels=True)
    doc = status.public_document(rep)
    doc["channels"] = [{"name": s.name, "status": s.status, "models": [{"id": e.name, **e.as_dict()} for e in s.entries]} for s in rep.channels]
    return jsonify(doc)


@route("/v1/incidents", "GET", summary="Incidents, newest first", tag="status", roles=READERS, query=dict(**PAGE))
def list_incidents():
    page = paginate(select(Incident).order_by(Incident.started_at.desc(), Incident.id.desc()), page_number(request.args), per_page(request.args))
    return jsonify(data=[status.incident_dict(i) for i in page.items], **page.meta())


@route("/v1/incidents", "POST", summary="Open an incident on the status page", tag="status", roles=WRITERS, status=201,
       body=obj(("title",), **FIELDS))
def create_incident():
    data = payload()
    row = incident_service.open_incident(actor(), str(data.get("title") or ""), str(data.get("body") or ""), str(data.get("impact") or "degraded"),
                                         _models(data, []), _when(data, "started_at", None), _when(data, "ended_at", None))
    return jsonify(status.incident_dict(row)), 201


@route("/v1/incidents/<int:incident_id>", "PATCH", summary="Change an incident (fields left out stay)", tag="status", roles=WRITERS,
       body=obj(**FIELDS))
def update_incident(incident_id: int):
    row, data = incident_service.incident_by_id(incident_id), payload()
    row = incident_service.update_incident(actor(), row, str(data.get("title", row.title) or ""), str(data.get("body", row.body) or ""),
                                           str(data.get("impact", row.impact) or ""), _models(data, list(row.models or [])),
                                           _when(data, "started_at", row.started_at), _when(data, "ended_at", row.ended_at))
    return jsonify(status.incident_dict(row))


@route("/v1/incidents/<int:incident_id>/resolve", "POST", summary="End an incident now", tag="status", roles=WRITERS)
def resolve_incident(incident_id: int):
    return jsonify(status.incident_dict(incident_service.resolve(actor(), incident_service.incident_by_id(incident_id))))


@route("/v1/incidents/<int:incident_id>", "DELETE", summary="Delete an incident (the audit log keeps it)", tag="status", roles=WRITERS,
       status=204)
def delete_incident(incident_id: int):
    incident_service.delete_incident(actor(), incident_service.incident_by_id(incident_id))
    return "", 204
