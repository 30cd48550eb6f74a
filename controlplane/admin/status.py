"""Operator console: the status page as operators see it — every channel with the same figures as
the public page (uptime, latency, first token, error rate, state) — and what the public page says:
incidents (open, edit, resolve, delete; each audited) and which customer groups get a section."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateTimeLocalField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import Length, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.admin.forms import choices, lines, utc
from controlplane.auth import require_roles
from controlplane.console.status import STATE_LABELS, WINDOW_LABELS
from controlplane.extensions import db
from controlplane.models import Group
from controlplane.models.incidents import BODY_MAX, TITLE_MAX
from controlplane.queries import status as status_query
from controlplane.services import ServiceError, incidents as incident_service
from controlplane.services.groups import group_by_id

bp = Blueprint("status", __name__, url_prefix="/status")
IMPACT_LABELS = {"degraded": "Degraded (slow or failing now and then)", "outage": "Outage (not served)"}


class IncidentForm(FlaskForm):
    title = StringField("Title", validators=[Length(max=TITLE_MAX)], description="What the public page shows as the headline")
    body = TextAreaField("Note", validators=[Length(max=BODY_MAX)], description=f"What is known, what to expect (≤ {BODY_MAX:,} characters)")
    impact = SelectField("Impact", choices=choices(IMPACT_LABELS.items()))
    models = TextAreaField("Models", description="One per line; empty: every model")
    started_at = DateTimeLocalField("Started (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: now")
    ended_at = DateTimeLocalField("Ended (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: still going on")
    submit = SubmitField("Save incident")

    def values(self) -> dict:
        return {"title": self.title.data, "body": self.body.data or "", "impact": self.impact.data, "models": lines(self.models.data),
                "started_at": utc(self.started_at.data), "ended_at": utc(self.ended_at.data)}


def _render(form=None, code=200):
    rep = status_query.report(with_channels=True)
    groups = list(db.session.scalars(select(Group).order_by(Group.name)))
    form = form or IncidentForm(formdata=None)
    return render_template("admin/status/index.html", rep=rep, form=form, groups=groups, states=STATE_LABELS, windows=WINDOW_LABELS,
                           impacts=IMPACT_LABELS), code


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/incidents")
@require_roles(*WRITERS)
def create():
    form = IncidentForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    try:
        row = incident_service.open_incident(actor(), **form.values())
    except ServiceError as error:
        db.session.rollback()
        return _render(form, failed(form, error))
    flash(f"Incident \u201c{row.title}\u201d is on the status page.")
    return redirect(url_for(".index"))


@bp.get("/incidents/<int:incident_id>")
@require_roles(*OPERATORS)
def edit(incident_id: int):
    row = found(incident_service.incident_by_id, incident_id)
    form = IncidentForm(formdata=None, title=row.title, body=row.body, impact=row.impact, models="\n".join(row.models or []),
                        started_at=row.started_at, ended_at=row.ended_at)
    return render_template("admin/status/edit.html", row=row, form=form)


@bp.post("/incidents/<int:incident_id>")
@require_roles(*WRITERS)
def update(incident_id: int):
    row = found(incident_service.incident_by_id, incident_id)
    form = IncidentForm()
    if not form.validate_on_submit():
        return render_template("admin/status/edit.html", row=row, form=form), 400
    try:
        incident_service.update_incident(actor(), row, **form.values())
    except ServiceError as error:
        db.session.rollback()
        return render_template("admin/status/edit.html", row=row, form=form), failed(form, error)
    flash("Incident saved.")
    return redirect(url_for(".index"))


@bp.post("/incidents/<int:incident_id>/resolve")
@require_roles(*WRITERS)
def resolve(incident_id: int):
    row = found(incident_service.incident_by_id, incident_id)
    if not confirmed():
        return confirm(f"Mark \u201c{row.title}\u201d as resolved now? The status page lists it under past incidents.", "Resolve",
                       url_for(".index"), danger=False)
    try:
        incident_service.resolve(actor(), row)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"\u201c{row.title}\u201d resolved.")
    return redirect(url_for(".index"))


@bp.post("/incidents/<int:incident_id>/delete")
@require_roles(*WRITERS)
def delete(incident_id: int):
    row = found(incident_service.incident_by_id, incident_id)
    if not confirmed():
        return confirm(f"Delete \u201c{row.title}\u201d? It disappears from the status page (the audit log keeps it).", "Delete",
                       url_for(".index"))
    incident_service.delete_incident(actor(), row)
    flash("Incident deleted.")
    return redirect(url_for(".index"))


@bp.post("/groups/<int:group_id>")
@require_roles(*WRITERS)
def show_group(group_id: int):
    group = found(group_by_id, group_id)
    shown = request.form.get("shown") == "yes"
    if not confirmed():
        effect = (f"Show group {group.name} on the public status page? Its name and its models' figures become public." if shown
                  else f"Take group {group.name} off the public status page?")
        return confirm(effect, "Show" if shown else "Hide", url_for(".index"), danger=shown)
    incident_service.show_group(actor(), group, shown)
    flash(f"Group {group.name} is {'on' if shown else 'off'} the status page.")
    return redirect(url_for(".index"))
