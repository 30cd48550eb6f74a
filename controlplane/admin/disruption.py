"""Operator console: disruption credits. The operator gives the period and what it hit (models,
channels); the page previews each affected account's pro-rata credit, and posting it — after a
confirmation stating the total — credits every account in one batch (services/disruption.py)."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import HiddenField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, found
from controlplane.admin.forms import lines
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Channel, DisruptionCredit
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, disruption
from relay.pricing import usd_text

bp = Blueprint("disruption", __name__, url_prefix="/disruption-credits")
LOCAL = "%Y-%m-%dT%H:%M"


class PostForm(FlaskForm):
    starts_at = HiddenField()
    ends_at = HiddenField()
    models = HiddenField()
    channels = HiddenField()
    total = HiddenField()
    reason = StringField("Reason", validators=[DataRequired(message="Say why (customers see this reason next to the credit)."), Length(max=500)],
                         description="Customers see it next to the credit, e.g. “Credit for the gpt-4o outage of 1–4 December”")
    submit = SubmitField("Post credits")


def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, LOCAL).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ServiceError("Enter a date and time (UTC).", field) from None


def _scope(source) -> dict:
    """The period and scope as the form gives them (the GET form, or the POST's hidden copy)."""
    channels = source.getlist("channel") if hasattr(source, "getlist") and source.getlist("channel") else lines(source.get("channels"))
    return {"starts_at": source.get("starts_at") or "", "ends_at": source.get("ends_at") or "", "models": lines(source.get("models")),
            "channels": [c for c in channels if c]}


def _plan(scope: dict):
    return disruption.preview(_when(scope["starts_at"], "starts_at"), _when(scope["ends_at"], "ends_at"), scope["models"], scope["channels"])


def _render(scope: dict, plan=None, error: ServiceError | None = None, form=None, status: int = 200):
    channels = list(db.session.execute(select(Channel.id, Channel.name).order_by(Channel.name)).all())
    batches = paginate(select(DisruptionCredit).order_by(DisruptionCredit.id.desc()), page_number(request.args), 20)
    if form is None and plan is not None:
        form = PostForm(formdata=None, starts_at=scope["starts_at"], ends_at=scope["ends_at"], models="\n".join(scope["models"]),
                        channels="\n".join(scope["channels"]), total=str(plan.total))
    previous = disruption.existing(plan) if plan is not None else None
    return render_template("admin/disruption/index.html", scope=scope, plan=plan, error=error, form=form, channels=channels, batches=batches,
                           previous=previous), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    scope = _scope(request.args)
    if not request.args.get("preview"):
        return _render(scope)
    try:
        plan = _plan(scope)
    except ServiceError as error:
        return _render(scope, error=error, status=400)
    return _render(scope, plan)


@bp.post("/")
@require_roles(*WRITERS)
def post():
    form = PostForm()
    scope = _scope(request.form)
    try:
        plan = _plan(scope)
    except ServiceError as error:
        return _render(scope, error=error, status=400)
    if not form.validate_on_submit():
        return _render(scope, plan, form=form, status=400)
    expected = int(form.total.data) if (form.total.data or "").isdigit() else None
    if not confirmed():
        return confirm(f"Credit {usd_text(plan.total)} to {len(plan.lines)} account(s) for the disruption of "
                       f"{plan.starts_at:%Y-%m-%d %H:%M} – {plan.ends_at:%Y-%m-%d %H:%M} UTC?", f"Credit {usd_text(plan.total)}",
                       url_for(".index", preview=1, starts_at=scope["starts_at"], ends_at=scope["ends_at"], models="\n".join(scope["models"]),
                               channel=scope["channels"]),
                       danger=False, details=[("Reason", form.reason.data)])
    try:
        batch = disruption.post(actor(), plan, form.reason.data, expected_total=expected)
    except ServiceError as error:
        db.session.rollback()
        return _render(scope, plan, error=error, form=form, status=error.status)
    flash(f"Credited {usd_text(batch.total)} to {batch.accounts} account(s).")
    return redirect(url_for(".detail", credit_id=batch.id))


@bp.get("/<int:credit_id>")
@require_roles(*OPERATORS)
def detail(credit_id: int):
    batch = found(disruption.batch_by_id, credit_id)
    names = dict(db.session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(batch.channel_ids or [-1]))).all())
    return render_template("admin/disruption/detail.html", batch=batch, lines=disruption.lines_of(batch.id), channel_names=names)
