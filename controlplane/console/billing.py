"""Balance and billing: the live balance and holds, the ledger, redeeming a code, receipts for
money added, and the low-balance alert. Organisation members see their allowance instead."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from controlplane import budgets, throttle
from controlplane.admin.forms import attach_error
from controlplane.console.access import actor, console_view, current_scope, entry_or_404, live_balance, managers_only
from controlplane.console.forms import AlertForm, RedeemForm
from controlplane.console.usage import key_names
from controlplane.extensions import db
from controlplane.models import EntryKind, LedgerEntry
from controlplane.queries.pagination import row_id
from controlplane.services import ServiceError, alerts, redemption

bp = Blueprint("billing", __name__, url_prefix="/billing")
PAGE = 50
RECEIPT_KINDS = (EntryKind.TOPUP.value, EntryKind.REDEMPTION.value)
REDEEM_ATTEMPTS_PER_MINUTE = 10


def _alert_form() -> AlertForm:
    row = alerts.settings_for(current_scope().account.id)
    if request.method == "POST":
        return AlertForm()
    if row is None:  # "Email me" is ticked only where email can go out
        return AlertForm(formdata=None, email=current_app.config["SWITCHBOARD"].smtp.configured)
    from controlplane.console import usd_input

    return AlertForm(formdata=None, threshold=usd_input(row.threshold), email=row.email, webhook_url=row.webhook_url or "")


def _page(redeem_form=None, alert_form=None, status=200):
    scope = current_scope()
    if not scope.manages:
        spent, held = budgets.member_window(scope.account.id, scope.user.id)
        return render_template("console/billing/member.html", scope=scope, spent=spent, held=held), status
    balance, held = live_balance(scope.account.id)
    receipts = list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == scope.account.id, LedgerEntry.kind.in_(RECEIPT_KINDS))
                                       .order_by(LedgerEntry.id.desc()).limit(10)))
    return render_template("console/billing/index.html", scope=scope, balance=balance, held=held, receipts=receipts,
                           redeem_form=redeem_form or RedeemForm(formdata=None), alert_form=alert_form or _alert_form(),
                           alert=alerts.settings_for(scope.account.id)), status


@bp.get("/")
@console_view
def index():
    return _page()


@bp.post("/redeem")
@console_view
def redeem():
    scope = managers_only()
    form = RedeemForm()
    if not form.validate_on_submit():
        return _page(redeem_form=form, status=400)
    subjects = [f"user:{current_user.id}", f"ip:{request.remote_addr}"]
    if throttle.exceeded("redeem", subjects, REDEEM_ATTEMPTS_PER_MINUTE):
        form.code.errors.append("Too many attempts. Wait a minute and try again.")
        return _page(redeem_form=form, status=429)
    try:
        entry = redemption.redeem(actor(), current_user, scope.account, form.code.data)
    except ServiceError as error:
        throttle.count("redeem", subjects)
        attach_error(form, error)
        return _page(redeem_form=form, status=error.status if error.status != 404 else 400)
    from relay.pricing import usd_text

    flash(f"Code redeemed: {usd_text(entry.amount)} added to {scope.account.name}.")
    return redirect(url_for(".index"))


@bp.post("/alerts")
@console_view
def save_alert():
    scope = managers_only()
    form = AlertForm()
    if not form.validate_on_submit():
        return _page(alert_form=form, status=400)
    try:
        alerts.save(actor(), scope.account, form.threshold.data, form.email.data, form.webhook_url.data)
    except ServiceError as error:
        attach_error(form, error)
        return _page(alert_form=form, status=400)
    flash("Low-balance alert saved." if form.threshold.data else "Low-balance alert turned off.")
    return redirect(url_for(".index"))


@bp.get("/ledger")
@console_view
def ledger():
    scope = managers_only()
    kind = request.args.get("kind") if request.args.get("kind") in {k.value for k in EntryKind} else None
    before = row_id(request.args.get("before"))
    query = select(LedgerEntry).where(LedgerEntry.account_id == scope.account.id)
    if kind:
        query = query.where(LedgerEntry.kind == kind)
    if before:
        query = query.where(LedgerEntry.id < before)
    rows = list(db.session.scalars(query.order_by(LedgerEntry.id.desc()).limit(PAGE + 1)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render_template("console/billing/ledger.html", entries=rows, kind=kind, kinds=[k.value for k in EntryKind],
                           next_before=rows[-1].id if more else None, names=key_names(), receipt_kinds=RECEIPT_KINDS)


@bp.get("/receipts/<int:entry_id>")
@console_view
def receipt(entry_id: int):
    entry = entry_or_404(entry_id)
    if entry.kind not in RECEIPT_KINDS:
        from flask import abort

        abort(404)
    return render_template("console/billing/receipt.html", entry=entry, account=current_scope().account)
