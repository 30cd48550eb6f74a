"""Operator console: bans of users, organisations, API keys, and IP addresses or ranges — active and ended,
with reason, expiry, who and when. A ban reaches the relay with the next snapshot (seconds)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateTimeLocalField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.admin.forms import choices, utc
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Account, ApiKey, Ban, User
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, bans as ban_service

bp = Blueprint("bans", __name__, url_prefix="/bans")
KIND_LABELS = {"user": "User", "org": "Organisation", "key": "API key", "ip": "IP address or range"}


class BanForm(FlaskForm):
    kind = SelectField("What", choices=choices(KIND_LABELS.items()))
    subject = StringField("Who", validators=[DataRequired(message="Say whom to ban."), Length(max=254)],
                          description="User: email or id · Organisation: id or name · Key: id or prefix · IP: 203.0.113.7 or 203.0.113.0/24")
    reason = StringField("Reason", validators=[DataRequired(message="Give a reason for the ban."), Length(max=500)])
    expires_at = DateTimeLocalField("Until (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: until lifted")
    submit = SubmitField("Ban")


def subject_names(rows) -> dict[tuple[str, str], str]:
    """How to show each ban's subject and author: emails and key prefixes instead of ids."""
    user_ids = {int(b.subject) for b in rows if b.kind == "user" and b.subject.isdigit()}
    user_ids |= {i for b in rows for i in (b.created_by, b.lifted_by) if i}
    key_ids = {int(b.subject) for b in rows if b.kind == "key" and b.subject.isdigit()}
    emails = dict(db.session.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all()) if user_ids else {}
    prefixes = dict(db.session.execute(select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(key_ids))).all()) if key_ids else {}
    org_ids = {int(b.subject) for b in rows if b.kind == "org" and b.subject.isdigit()}
    orgs = dict(db.session.execute(select(Account.id, Account.name).where(Account.id.in_(org_ids))).all()) if org_ids else {}
    names = {("user", str(i)): e for i, e in emails.items()}
    names.update({("org", str(i)): n for i, n in orgs.items()})
    names.update({("key", str(i)): f"{p}… (key {i})" for i, p in prefixes.items()})
    names.update({("operator", str(i)): e for i, e in emails.items()})
    return names


def _render(form=None, status=200):
    show = "ended" if request.args.get("show") == "ended" else "active"
    query = ban_service.ended_query() if show == "ended" else ban_service.active_query()
    if request.args.get("filter_kind") in KIND_LABELS:
        query = query.where(Ban.kind == request.args["filter_kind"])
    page = paginate(query.order_by(Ban.id.desc()), page_number(request.args))
    form = form or BanForm(formdata=None, kind=request.args.get("kind", "user"), subject=request.args.get("subject", ""))
    return render_template("admin/bans/list.html", page=page, show=show, form=form, kinds=KIND_LABELS, names=subject_names(page.items)), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/")
@require_roles(*WRITERS)
def create():
    form = BanForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    until = utc(form.expires_at.data)
    if not confirmed():
        span = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "until someone lifts it"
        return confirm(f"Ban {KIND_LABELS[form.kind.data].lower()} {form.subject.data} {span}? The gateway refuses it within seconds.",
                       "Ban", url_for(".index"), details=[("Reason", form.reason.data)])
    try:
        row = ban_service.ban(actor(), form.kind.data, form.subject.data, form.reason.data, until)
    except ServiceError as error:
        db.session.rollback()
        return _render(form, failed(form, error))
    flash(f"Banned {KIND_LABELS[row.kind].lower()} {form.subject.data}.")
    return redirect(url_for(".index"))


@bp.post("/<int:ban_id>/lift")
@require_roles(*WRITERS)
def lift(ban_id: int):
    row = found(ban_service.ban_by_id, ban_id)
    name = subject_names([row]).get((row.kind, row.subject), row.subject)
    if not confirmed():
        return confirm(f"Lift the ban of {KIND_LABELS[row.kind].lower()} {name}? Its requests are accepted again within seconds.",
                       "Lift ban", url_for(".index"), danger=False)
    try:
        ban_service.lift(actor(), row)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"Ban of {name} lifted.")
    return redirect(url_for(".index"))
