"""Operator console: organisations — search, one organisation's page (members and their roles and
allowances, balance and holds, ledger, keys, usage, bans) and what an operator does to it: top up,
adjust, give goodwill credit, ban and lift the ban, change a member's role, close it. Money and bans confirm first, stating the effect;
every action is audited by the service it calls."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane import budgets
from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.admin.forms import scoped, utc
from controlplane.admin.user_forms import REASON, AdjustForm, BanForm, CloseAccountForm, TopupForm
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Account, LedgerEntry, Refund
from controlplane.queries import organisations as org_queries
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, bans, billing, closure, organisations, refunds
from controlplane.validation import usd
from relay.pricing import usd_text

bp = Blueprint("organisations", __name__, url_prefix="/organisations")


class GoodwillForm(FlaskForm):
    amount = StringField("Credit (USD)", validators=[DataRequired(message="Enter an amount, like 5 or 0.50.")])
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)], description="E.g. the outage it makes up for")
    submit = SubmitField("Give credit")


class OrgBanForm(BanForm):
    submit = SubmitField("Ban organisation")


class CloseOrgForm(CloseAccountForm):
    submit = SubmitField("Close organisation")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    page = paginate(org_queries.search(request.args), page_number(request.args))
    ids = [a.id for a in page.items]
    filtered = any(request.args.get(k) for k in org_queries.FILTERS)
    return render_template("admin/organisations/list.html", page=page, args=request.args, members=org_queries.member_counts(ids),
                           banned=org_queries.banned_ids(ids), filtered=filtered)


def render_detail(account: Account, status: int = 200, **forms):
    """The organisation page, with any submitted form (and its errors) in place of a blank one."""
    defaults = {"topup": TopupForm(formdata=None), "adjust": AdjustForm(formdata=None), "goodwill": GoodwillForm(formdata=None),
                "ban": OrgBanForm(formdata=None), "close": CloseOrgForm(formdata=None)}
    defaults.update(forms)
    for name, form in defaults.items():
        scoped(form, name)
    live, held = billing.live_balance(account.id)
    entries = paginate(select(LedgerEntry).where(LedgerEntry.account_id == account.id).order_by(LedgerEntry.id.desc()),
                       page_number(request.args), 25)
    refunded = set(db.session.scalars(select(Refund.topup_entry_id).where(Refund.topup_entry_id.in_([e.id for e in entries.items]))))
    charged = [e.request_id for e in entries.items if e.request_id]
    refunded |= set(db.session.scalars(select(Refund.request_id).where(Refund.request_id.in_(charged)))) if charged else set()
    members = org_queries.members(account.id)
    spent = {m.user_id: _member_spent(account.id, m.user_id) for m in members}
    return render_template("admin/organisations/detail.html", org=account, live=live, held=held, entries=entries, refunded=refunded,
                           members=members, spent=spent, keys=org_queries.keys(account.id), usage=org_queries.usage_by_model(account.id),
                           active_bans=bans.active_for("org", str(account.id)), forms=defaults), status


def _member_spent(account_id: int, user_id: int) -> int:
    try:
        return budgets.member_window(account_id, user_id)[0]
    except Exception:  # noqa: BLE001 - the page still shows everything else when Redis is away
        return 0


@bp.get("/<int:account_id>")
@require_roles(*OPERATORS)
def detail(account_id: int):
    return render_detail(found(organisations.organisation_by_id, account_id))


def _back(account: Account) -> str:
    return url_for(".detail", account_id=account.id)


@bp.post("/<int:account_id>/topup")
@require_roles(*WRITERS)
def topup(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    form = TopupForm()
    if not form.validate_on_submit():
        return render_detail(account, 400, topup=form)
    try:
        amount = usd(form.amount.data, "amount", allow_zero=False)
    except ServiceError as error:
        return render_detail(account, failed(form, error), topup=form)
    if not confirmed():
        return confirm(f"Add {usd_text(amount)} to the organisation {account.name}?", f"Add {usd_text(amount)}", _back(account), danger=False,
                       details=[("Reason", form.reason.data)])
    billing.topup(actor(), account, form.amount.data, form.reason.data)
    flash(f"Added {usd_text(amount)} to {account.name}.")
    return redirect(_back(account))


@bp.post("/<int:account_id>/adjust")
@require_roles(*WRITERS)
def adjust(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    form = AdjustForm()
    if not form.validate_on_submit():
        return render_detail(account, 400, adjust=form)
    try:
        amount = usd(form.amount.data, "amount", allow_zero=False, allow_negative=True)
    except ServiceError as error:
        return render_detail(account, failed(form, error), adjust=form)
    if not confirmed():
        verb = "Add" if amount > 0 else "Take"
        return confirm(f"{verb} {usd_text(abs(amount))} {'to' if amount > 0 else 'from'} the balance of the organisation {account.name}?",
                       f"{verb} {usd_text(abs(amount))}", _back(account), danger=amount < 0, details=[("Reason", form.reason.data)])
    billing.adjust(actor(), account, form.amount.data, form.reason.data)
    flash(f"Balance of {account.name} adjusted by {usd_text(amount)}.")
    return redirect(_back(account))


@bp.post("/<int:account_id>/goodwill")
@require_roles(*WRITERS)
def goodwill(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    form = GoodwillForm()
    if not form.validate_on_submit():
        return render_detail(account, 400, goodwill=form)
    try:
        amount = usd(form.amount.data, "amount", allow_zero=False)
    except ServiceError as error:
        return render_detail(account, failed(form, error), goodwill=form)
    if not confirmed():
        return confirm(f"Give {usd_text(amount)} of credit to the organisation {account.name}?", f"Give {usd_text(amount)}", _back(account),
                       danger=False, details=[("Reason", form.reason.data)])
    refunds.goodwill(actor(), account, form.amount.data, form.reason.data)
    flash(f"Gave {usd_text(amount)} of credit to {account.name}.")
    return redirect(_back(account))


@bp.post("/<int:account_id>/ban")
@require_roles(*WRITERS)
def ban(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    form = OrgBanForm()
    if not form.validate_on_submit():
        return render_detail(account, 400, ban=form)
    until = utc(form.expires_at.data)
    if not confirmed():
        span = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "until someone lifts the ban"
        return confirm(f"Ban the organisation {account.name} {span}? The gateway refuses every key charged to it within seconds.",
                       "Ban organisation", _back(account), details=[("Reason", form.reason.data)])
    try:
        bans.ban(actor(), "org", str(account.id), form.reason.data, until)
    except ServiceError as error:
        db.session.rollback()
        return render_detail(account, failed(form, error), ban=form)
    flash(f"{account.name} is banned.")
    return redirect(_back(account))


@bp.post("/<int:account_id>/unban")
@require_roles(*WRITERS)
def unban(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    try:
        count = bans.unban_organisation(actor(), account)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"{account.name} is no longer banned ({count} ban(s) lifted).")
    return redirect(_back(account))


@bp.post("/<int:account_id>/members/<int:member_id>/role")
@require_roles(*WRITERS)
def member_role(account_id: int, member_id: int):
    account = found(organisations.organisation_by_id, account_id)
    role = request.form.get("role", "")
    try:
        row = organisations.operator_set_role(actor(), account, member_id, role)
    except ServiceError as error:
        db.session.rollback()
        if error.status == 404:
            abort(404)
        flash(error.message, "error")
    else:
        flash(f"{row.user.email} is now {row.role} of {account.name}.")
    return redirect(_back(account))


@bp.post("/<int:account_id>/close")
@require_roles(*WRITERS)
def close(account_id: int):
    account = found(organisations.organisation_by_id, account_id)
    form = CloseOrgForm()
    if not form.validate_on_submit():
        return render_detail(account, 400, close=form)
    try:
        plan = closure.plan_organisation(account)
    except ServiceError as error:
        return render_detail(account, failed(form, error), close=form)
    if not confirmed():
        refundable = f"; {usd_text(plan.refundable_total)} of it from top-ups inside the 14-day refund window" if plan.refundable else ""
        return confirm(f"Close the organisation {account.name}? Its {plan.keys} API key(s) stop at once and its {len(plan.members)} "
                       f"member(s) leave. The balance of {usd_text(plan.balance)} stays on the closed account{refundable}.", "Close organisation",
                       _back(account), details=[("Reason", form.reason.data)])
    try:
        closure.close_organisation(actor(), account, form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        return render_detail(account, failed(form, error), close=form)
    flash(f"{account.name} is closed; its ledger and request metadata are kept.")
    return redirect(_back(account))
