"""Operator console: what an operator does to one user — top up, adjust, ban and unban, change
group or role (admins), enable or disable sign-in, create an API key for them (shown once) and
disable one, close the account. Routes on the users
blueprint; money and bans go through a confirmation that states the effect."""
from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for

from controlplane.admin import ADMINS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found, is_admin
from controlplane.admin.forms import choices, lines, utc
from controlplane.admin.user_forms import AdjustForm, BanForm, CloseAccountForm, GroupChangeForm, NewKeyForm, RoleForm, TopupForm
from controlplane.admin.users import bp, group_choices, render_detail
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ApiKey, KeyDecider, KeyStatus
from controlplane.services import ServiceError, bans, billing, closure, groups, keys, users as user_service
from controlplane.validation import usd
from relay.pricing import micro_to_usd, usd_text


def _back(user) -> str:
    return url_for(".detail", user_id=user.id)


def _amount_text(text: str) -> str:
    try:
        return micro_to_usd(usd(text, "amount", allow_negative=True))
    except ServiceError:
        return text


@bp.post("/<int:user_id>/topup")
@require_roles(*WRITERS)
def topup(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = TopupForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, topup=form)
    try:
        amount = usd(form.amount.data, "amount", allow_zero=False)
    except ServiceError as error:
        return render_detail(user, failed(form, error), topup=form)
    if not confirmed():
        return confirm(f"Add {usd_text(amount)} to {user.email}?", f"Add {usd_text(amount)}", _back(user), danger=False,
                       details=[("Reason", form.reason.data)])
    billing.topup(actor(), user.account, form.amount.data, form.reason.data)
    flash(f"Added {usd_text(amount)} to {user.email}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/adjust")
@require_roles(*WRITERS)
def adjust(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = AdjustForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, adjust=form)
    try:
        amount = usd(form.amount.data, "amount", allow_zero=False, allow_negative=True)
    except ServiceError as error:
        return render_detail(user, failed(form, error), adjust=form)
    if not confirmed():
        verb = "Add" if amount > 0 else "Take"
        return confirm(f"{verb} {usd_text(abs(amount))} {'to' if amount > 0 else 'from'} the balance of {user.email}?",
                       f"{verb} {usd_text(abs(amount))}", _back(user), danger=amount < 0, details=[("Reason", form.reason.data)])
    billing.adjust(actor(), user.account, form.amount.data, form.reason.data)
    flash(f"Balance of {user.email} adjusted by {usd_text(amount)}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/ban")
@require_roles(*WRITERS)
def ban(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = BanForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, ban=form)
    until = utc(form.expires_at.data)
    if not confirmed():
        span = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "until someone lifts the ban"
        return confirm(f"Ban {user.email} {span}? The gateway refuses their API calls within seconds.", "Ban user", _back(user),
                       details=[("Reason", form.reason.data)])
    try:
        bans.ban(actor(), "user", str(user.id), form.reason.data, until)
    except ServiceError as error:
        db.session.rollback()
        return render_detail(user, failed(form, error), ban=form)
    flash(f"{user.email} is banned.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/unban")
@require_roles(*WRITERS)
def unban(user_id: int):
    user = found(user_service.user_by_id, user_id)
    try:
        count = bans.unban_user(actor(), user)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"{user.email} is no longer banned ({count} ban(s) lifted).")
    return redirect(_back(user))


@bp.post("/<int:user_id>/group")
@require_roles(*WRITERS)
def change_group(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = GroupChangeForm()
    form.group.choices = choices(group_choices())
    if not form.validate_on_submit():
        return render_detail(user, 400, group=form)
    target = found(groups.group_by_name, form.group.data)
    user_service.set_group(actor(), user, target)
    flash(f"{user.email} is now in {target.name}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/role")
@require_roles(*ADMINS)
def change_role(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = RoleForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, role=form)
    if not confirmed():
        return confirm(f"Make {user.email} {form.role.data}? Their current sessions end.", f"Make {form.role.data}", _back(user))
    try:
        user_service.set_role(actor(), user, form.role.data)
    except ServiceError as error:
        db.session.rollback()
        return render_detail(user, failed(form, error), role=form)
    flash(f"{user.email} is now {user.role}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/status")
@require_roles(*WRITERS)
def set_active(user_id: int):
    user = found(user_service.user_by_id, user_id)
    active = request.form.get("active") == "yes"
    if user.is_operator and not is_admin():
        abort(403)  # operator accounts are managed by admins
    if not active and not confirmed():
        return confirm(f"Disable {user.email}? They are signed out, cannot sign in, and their API keys stop working.", "Disable user", _back(user))
    try:
        user_service.set_active(actor(), user, active)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"{user.email} is {'enabled' if active else 'disabled'}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/keys/<int:key_id>/status")
@require_roles(*WRITERS)
def key_status(user_id: int, key_id: int):
    user = found(user_service.user_by_id, user_id)
    key = db.session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id or key.status == KeyStatus.DELETED.value:
        abort(404)
    wanted = KeyStatus.ENABLED if request.form.get("status") == "enabled" else KeyStatus.DISABLED
    if wanted == KeyStatus.DISABLED and not confirmed():
        return confirm(f"Disable the key {key.prefix}… of {user.email}? Calls with it are refused within seconds.", "Disable key", _back(user))
    keys.set_key_status(actor(), key, wanted, by=KeyDecider.OPERATOR)  # sticky: the owner cannot enable it again
    flash(f"Key {key.prefix}… {wanted.value}.")
    return redirect(_back(user))


@bp.post("/<int:user_id>/keys")
@require_roles(*WRITERS)
def create_key(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = NewKeyForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, new_key=form)
    try:
        key, secret = keys.create_key(actor(), user, form.name.data or "", form.credit_limit.data or None, lines(form.models.data))
    except ServiceError as error:
        db.session.rollback()
        return render_detail(user, failed(form, error), new_key=form)
    # Shown once, in this response only: never stored, never cached.
    response = make_response(render_template("admin/users/key_created.html", user=user, key=key, secret=secret))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<int:user_id>/close")
@require_roles(*WRITERS)
def close(user_id: int):
    user = found(user_service.user_by_id, user_id)
    form = CloseAccountForm()
    if not form.validate_on_submit():
        return render_detail(user, 400, close=form)
    try:
        plan = closure.plan(user)
    except ServiceError as error:
        return render_detail(user, failed(form, error), close=form)
    if not confirmed():
        refundable = f"; {usd_text(plan.refundable_total)} of it from top-ups inside the 14-day refund window" if plan.refundable else ""
        return confirm(f"Close the account of {user.email}? Their {plan.keys} API key(s) stop at once and their personal details are removed. "
                       f"The balance of {usd_text(plan.balance)} stays on the closed account{refundable}.", "Close account", _back(user),
                       details=[("Reason", form.reason.data)])
    try:
        closure.close(actor(), user, form.reason.data)
    except ServiceError as error:
        db.session.rollback()
        return render_detail(user, failed(form, error), close=form)
    flash(f"Account {user.id} is closed; its ledger and request metadata are kept.")
    return redirect(_back(user))
