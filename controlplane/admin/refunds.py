"""Operator console: refunds — of a request (support may do this), of a top-up's unused part
(14 days; later only an admin's override), and goodwill credit. Each confirms its effect first."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, IntegerField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin import OPERATORS, REFUNDERS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, is_admin
from controlplane.admin.forms import scoped
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Refund, RefundKind, User
from controlplane.queries.pagination import page_number, paginate, row_id
from controlplane.services import ServiceError, refunds as refund_service, users as user_service
from controlplane.validation import usd
from relay.pricing import usd_text

bp = Blueprint("refunds", __name__, url_prefix="/refunds")
REASON = "Say why (the user sees this reason)."


class RequestRefundForm(FlaskForm):
    request_id = StringField("Request id", validators=[DataRequired(message="Enter the request id (req_…)."), Length(max=40)])
    amount = StringField("Amount (USD)", validators=[Optional()], description="Empty: all it was charged")
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)])
    submit = SubmitField("Refund request")


class TopupRefundForm(FlaskForm):
    topup = IntegerField("Top-up entry", validators=[DataRequired(message="Choose the top-up (its ledger entry number).")])
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)])
    override = BooleanField("Override the 14-day limit (admins)")
    submit = SubmitField("Refund top-up")


class GoodwillForm(FlaskForm):
    user = StringField("User", validators=[DataRequired(message="Enter the user's email.")], description="Email address")
    amount = StringField("Amount (USD)", validators=[DataRequired(message="Enter an amount, like 5.")])
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)], description="E.g. the outage it makes up for")
    submit = SubmitField("Give credit")


def _email(account_id: int) -> str:
    from controlplane.models import Account

    return (db.session.scalar(select(User.email).where(User.account_id == account_id))
            or db.session.scalar(select(Account.name).where(Account.id == account_id)) or f"account {account_id}")


def _previews() -> dict:
    """What the prefilled request or top-up would be refunded, shown before anyone submits."""
    out = {}
    try:
        if request.args.get("request_id"):
            out["request"] = refund_service.request_refund(request.args["request_id"])
        if row_id(request.args.get("topup")):
            out["topup"] = refund_service.topup_refund(row_id(request.args["topup"]))
    except ServiceError as error:
        out["error"] = error.message
    return out


def _render(status=200, **forms):
    kind = request.args.get("kind") if request.args.get("kind") in [k.value for k in RefundKind] else None
    query = select(Refund).order_by(Refund.id.desc())
    if kind:
        query = query.where(Refund.kind == kind)
    page = paginate(query, page_number(request.args))
    emails = dict(db.session.execute(select(User.account_id, User.email).where(User.account_id.in_({r.account_id for r in page.items}))).all())
    defaults = {"request_form": RequestRefundForm(formdata=None, request_id=request.args.get("request_id", "")),
                "topup_form": TopupRefundForm(formdata=None, topup=request.args.get("topup", type=int)),
                "goodwill_form": GoodwillForm(formdata=None, user=request.args.get("user", ""))}
    defaults.update(forms)
    for name, form in defaults.items():
        scoped(form, name)
    return render_template("admin/refunds/list.html", page=page, kind=kind, emails=emails, previews=_previews(), **defaults), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/request")
@require_roles(*REFUNDERS)
def refund_request():
    form = RequestRefundForm()
    if not form.validate_on_submit():
        return _render(400, request_form=form)
    try:
        plan = refund_service.request_refund(form.request_id.data)
        amount = plan.charged if not form.amount.data else usd(form.amount.data, "amount", allow_zero=False)
        if not confirmed():
            return confirm(f"Refund {usd_text(amount)} of request {plan.log.request_id} to {_email(plan.charge.account_id)}?",
                           f"Refund {usd_text(amount)}", url_for(".index"), danger=False,
                           details=[("Charged", usd_text(plan.charged)), ("Model", plan.log.model or "—"), ("Reason", form.reason.data)])
        refund_service.refund_request(actor(), form.request_id.data, form.amount.data, form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        return _render(failed(form, error), request_form=form)
    flash(f"Refunded {usd_text(amount)} of {plan.log.request_id} to {_email(plan.charge.account_id)}.")
    return redirect(url_for(".index"))


@bp.post("/topup")
@require_roles(*WRITERS)
def refund_topup():
    form = TopupRefundForm()
    if not form.validate_on_submit():
        return _render(400, topup_form=form)
    override = bool(form.override.data) and is_admin()
    try:
        plan = refund_service.topup_refund(form.topup.data)
        if plan.late and not override:
            raise ServiceError("This top-up is older than 14 days: only an admin can refund it, by ticking the override.", "override", 403)
        if not confirmed():
            return confirm(f"Refund {usd_text(plan.unused)} of the {usd_text(plan.entry.amount)} top-up to "
                           f"{_email(plan.entry.account_id)}? The money leaves their balance; pay it back outside Switchboard.",
                           f"Refund {usd_text(plan.unused)}", url_for(".index"), details=[("Reason", form.reason.data)])
        refund_service.refund_topup(actor(), form.topup.data, form.reason.data, override=override)
    except ServiceError as error:
        db.session.rollback()
        return _render(failed(form, error), topup_form=form)
    flash(f"Top-up refunded: {usd_text(plan.unused)} taken from {_email(plan.entry.account_id)}'s balance.")
    return redirect(url_for(".index"))


@bp.post("/goodwill")
@require_roles(*WRITERS)
def goodwill():
    form = GoodwillForm()
    if not form.validate_on_submit():
        return _render(400, goodwill_form=form)
    try:
        user = user_service.user_by_email(form.user.data)
        amount = usd(form.amount.data, "amount", allow_zero=False)
        if not confirmed():
            return confirm(f"Give {usd_text(amount)} of credit to {user.email}?", f"Give {usd_text(amount)}", url_for(".index"),
                           danger=False, details=[("Reason", form.reason.data)])
        refund_service.goodwill(actor(), user.account, form.amount.data, form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        if error.status == 404:
            error = ServiceError(f"No user with the email {form.user.data}.", "user")
        return _render(failed(form, error), goodwill_form=form)
    flash(f"Gave {usd_text(amount)} of credit to {user.email}.")
    return redirect(url_for(".index"))
