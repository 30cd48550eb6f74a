"""API keys: list, create (the secret shown once), change limits, enable/disable, delete, and each
key's own usage and spend. The service layer publishes every change to the relays."""
from __future__ import annotations

import time
from datetime import timedelta

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from wtforms.fields.choices import SelectChoice

from controlplane import budgets, catalog
from controlplane.admin.forms import attach_error, lines
from controlplane.console import usd_input
from controlplane.console.access import actor, console_view, current_scope, key_or_404
from controlplane.console.forms import KeyForm
from controlplane.console.usage_data import breakdown, series
from controlplane.extensions import db
from controlplane.models import ApiKey, EntryKind, KeyStatus, LedgerEntry, RequestLog, UsageRollup, User, utcnow
from controlplane.services import ServiceError, keys as key_service

bp = Blueprint("keys", __name__, url_prefix="/keys")


def _allowed() -> list[str]:
    return catalog.allowed_models(current_user.group)


def _form(key: ApiKey | None = None) -> KeyForm:
    form = KeyForm(obj=None) if key is None or request.method == "POST" else KeyForm(
        formdata=None, name=key.name, models=list(key.models or []), ip_allow="\n".join(key.ip_allow or []),
        expires_at=key.expires_at.replace(tzinfo=None) if key.expires_at else None,
        credit_limit=usd_input(key.credit_limit), daily_budget=usd_input(key.daily_budget), monthly_budget=usd_input(key.monthly_budget))
    allowed = _allowed()
    extra = [m for m in (key.models if key else []) if m not in allowed]  # no longer served: shown so it can be unticked
    form.models.choices = [SelectChoice(m, m) for m in allowed + extra]
    return form



def _fields(form: KeyForm) -> dict:
    when = form.expires_at.data
    return dict(name=form.name.data, credit_limit_usd=form.credit_limit.data, daily_budget_usd=form.daily_budget.data,
                monthly_budget_usd=form.monthly_budget.data, models=form.models.data or [], ip_allow=lines(form.ip_allow.data),
                expires_at=when.replace(tzinfo=utcnow().tzinfo) if when else None, allowed_models=set(_allowed()))


@bp.get("/")
@console_view
def index():
    scope = current_scope()
    rows = list(db.session.scalars(select(ApiKey).where(scope.keys_clause()).order_by(ApiKey.id.desc())))
    owners = {u.id: u.email for u in db.session.scalars(select(User).where(User.id.in_({k.user_id for k in rows})))} if scope.is_org else {}
    since = utcnow() - timedelta(days=30)
    spend = dict(db.session.execute(select(UsageRollup.api_key_id, func.sum(UsageRollup.cost)).where(
        scope.rollups_clause(), UsageRollup.bucket >= since).group_by(UsageRollup.api_key_id)).all())
    for key_id, amount in _refunded(scope.account.id, since).items():
        spend[key_id] = int(spend.get(key_id) or 0) - amount
    return render_template("console/keys/list.html", keys=rows, owners=owners, spend=spend, scope=scope, now=utcnow())


@bp.route("/new", methods=["GET", "POST"])
@console_view
def new():
    scope = current_scope()
    form = _form()
    if form.validate_on_submit():
        try:
            key, secret = key_service.create_key(actor(), current_user, account_id=scope.account.id, **_fields(form))
        except ServiceError as error:
            attach_error(form, error)
        else:
            # Shown once, in this response only: never stored, never cached, never shown again.
            response = make_response(render_template("console/keys/created.html", key=key, secret=secret))
            response.headers["Cache-Control"] = "no-store"
            return response
    return render_template("console/keys/form.html", form=form, key=None, scope=scope), 400 if request.method == "POST" else 200


@bp.get("/<int:key_id>")
@console_view
def detail(key_id: int):
    key = key_or_404(key_id)
    now = time.time()
    since = utcnow() - timedelta(days=30)
    clause = [current_scope().rollups_clause(), UsageRollup.api_key_id == key.id]
    recent = list(db.session.scalars(select(RequestLog).where(current_scope().logs_clause(), RequestLog.api_key_id == key.id)
                                     .order_by(RequestLog.started_at.desc()).limit(10)))
    summary, _, by_model = breakdown(clause, since)
    refunded = _refunded(key.account_id, since, key.id).get(key.id, 0)
    return render_template("console/keys/detail.html", key=key, windows=budgets.key_windows(key.account_id, key.id, now), refunded=refunded,
                           live_spent=_live_spent(key.account_id, key.id), days=series(clause, since, "day", None), summary=summary,
                           by_model=by_model, recent=recent, owner=db.session.get(User, key.user_id), now=utcnow())


def _refunded(account_id: int, since, key_id: int | None = None) -> dict[int, int]:
    """µ$ refunded per key since `since`: the rollups count what was charged, refunds give some back."""
    query = select(LedgerEntry.api_key_id, func.sum(LedgerEntry.amount)).where(
        LedgerEntry.account_id == account_id, LedgerEntry.kind == EntryKind.REFUND.value, LedgerEntry.api_key_id.is_not(None),
        LedgerEntry.created_at >= since)
    if key_id is not None:
        query = query.where(LedgerEntry.api_key_id == key_id)
    return {k: int(v or 0) for k, v in db.session.execute(query.group_by(LedgerEntry.api_key_id)).all()}


def _live_spent(account_id: int, key_id: int) -> int:
    from controlplane.runtime import runtime

    return runtime().quota.key_spent(account_id, key_id)[0]


@bp.route("/<int:key_id>/edit", methods=["GET", "POST"])
@console_view
def edit(key_id: int):
    key = key_or_404(key_id)
    form = _form(key)
    form.submit.label.text = "Save key"
    if form.validate_on_submit():
        try:
            key_service.update_key(actor(), key, **_fields(form))
        except ServiceError as error:
            attach_error(form, error)
        else:
            flash(f"Key {key.name or key.prefix} saved. The gateway applies it within seconds.")
            return redirect(url_for(".detail", key_id=key.id))
    return render_template("console/keys/form.html", form=form, key=key, scope=current_scope()), 400 if request.method == "POST" else 200


@bp.post("/<int:key_id>/status")
@console_view
def status(key_id: int):
    key = key_or_404(key_id)
    wanted = request.form.get("status")
    if wanted not in (KeyStatus.ENABLED.value, KeyStatus.DISABLED.value):
        abort(400)
    try:
        key_service.set_key_status(actor(), key, KeyStatus(wanted))
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"Key {key.name or key.prefix} is {wanted}.")
    return redirect(request.form.get("next") if request.form.get("next") == url_for(".index") else url_for(".detail", key_id=key.id))


@bp.route("/<int:key_id>/delete", methods=["GET", "POST"])
@console_view
def delete(key_id: int):
    key = key_or_404(key_id)
    if request.method == "POST":
        key_service.delete_key(actor(), key)
        flash(f"Key {key.name or key.prefix} is deleted. Requests with it are refused from now on.")
        return redirect(url_for(".index"))
    return render_template("console/keys/delete.html", key=key)
