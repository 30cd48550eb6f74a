"""Organisations: create one, switch between personal and organisation accounts, invite by link or
email, set roles and monthly allowances, remove members, accept an invitation."""
from __future__ import annotations

import time

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from controlplane import budgets
from controlplane.admin.forms import attach_error
from controlplane.console.access import ACCOUNT_KEY, actor, console_view, current_scope
from controlplane.console.forms import AllowanceForm, InviteForm, OrganisationForm, RoleForm
from controlplane.queries.pagination import row_id
from controlplane.redirects import safe_next
from controlplane.services import ServiceError, notices, organisations as orgs

bp = Blueprint("organisations", __name__)


def _invite_link(token: str) -> str:
    return url_for(".invitation", token=token, _external=True)


def _page(create_form=None, invite_form=None, link=None, status=200):
    scope = current_scope()
    members = orgs.members(scope.account.id) if scope.is_org else []
    now = time.time()
    used = {m.user_id: budgets.member_window(scope.account.id, m.user_id, now)[0] for m in members}
    return render_template("console/organisations/index.html", scope=scope, memberships=orgs.memberships_of(current_user),
                           members=members, used=used, invitations=orgs.invitations(scope.account.id) if scope.is_org and scope.manages else [],
                           create_form=create_form or OrganisationForm(formdata=None), invite_form=invite_form or InviteForm(formdata=None),
                           allowance_form=AllowanceForm(formdata=None), role_form=RoleForm(formdata=None), link=link), status


@bp.get("/organisation")
@console_view
def index():
    return _page()


@bp.post("/organisation/new")
@console_view
def create():
    form = OrganisationForm()
    if not form.validate_on_submit():
        return _page(create_form=form, status=400)
    try:
        account = orgs.create_organisation(actor(), current_user, form.name.data)
    except ServiceError as error:
        attach_error(form, error)
        return _page(create_form=form, status=400)
    session[ACCOUNT_KEY] = account.id
    flash(f"{account.name} is created and you are its owner. Invite your team below.")
    return redirect(url_for(".index"))


@bp.post("/account/switch")
@console_view
def switch():
    """Work in the personal account (empty value) or an organisation the person belongs to."""
    raw = request.form.get("account_id") or ""
    if raw in ("", "personal"):
        session.pop(ACCOUNT_KEY, None)
    elif row_id(raw) is not None and orgs.membership(row_id(raw), current_user.id) is not None:
        session[ACCOUNT_KEY] = row_id(raw)
    else:
        abort(404)
    return redirect(safe_next(request.form.get("next")) or url_for("console.home"))


def _membership():
    scope = current_scope()
    if not scope.is_org:
        abort(404)
    return scope.membership


def _act(action, success: str):
    """Run a membership change; a refusal comes back as a message on the page."""
    try:
        action()
    except ServiceError as error:
        if error.status == 404:
            abort(404)
        flash(error.message, "error")
        return redirect(url_for(".index")), error.status
    flash(success)
    return redirect(url_for(".index"))


@bp.post("/organisation/invitations")
@console_view
def invite():
    by = _membership()
    form = InviteForm()
    if not form.validate_on_submit():
        return _page(invite_form=form, status=400)
    try:
        row, token = orgs.invite(actor(), by, form.email.data or None, form.role.data)
    except ServiceError as error:
        attach_error(form, error)
        return _page(invite_form=form, status=error.status if error.status == 403 else 400)
    link = _invite_link(token)
    if row.email:
        notices.invitation(row.id, link)
        sent = "emailed to " + row.email if current_app.config["SWITCHBOARD"].smtp.configured else "ready (email is not set up here: send the link yourself)"
        flash(f"Invitation {sent}.")
    return _page(link=link)


@bp.post("/organisation/invitations/<int:invitation_id>/revoke")
@console_view
def revoke(invitation_id: int):
    by = _membership()
    return _act(lambda: orgs.revoke_invitation(actor(), by, invitation_id), "Invitation withdrawn.")


@bp.post("/organisation/members/<int:member_id>/role")
@console_view
def role(member_id: int):
    by = _membership()
    return _act(lambda: orgs.set_role(actor(), by, member_id, request.form.get("role", "")), "Role changed.")


@bp.post("/organisation/members/<int:member_id>/allowance")
@console_view
def allowance(member_id: int):
    by = _membership()
    return _act(lambda: orgs.set_allowance(actor(), by, member_id, (request.form.get("allowance") or "").strip() or None),
                "Allowance saved. The gateway applies it within seconds.")


@bp.post("/organisation/members/<int:member_id>/remove")
@console_view
def remove(member_id: int):
    by = _membership()
    leaving = member_id == by.id
    response = _act(lambda: orgs.remove_member(actor(), by, member_id),
                    "You left the organisation." if leaving else "Member removed; their keys on this account are disabled.")
    if leaving and not isinstance(response, tuple):
        session.pop(ACCOUNT_KEY, None)
    return response


@bp.route("/invitations/<token>", methods=["GET", "POST"])
def invitation(token: str):
    """Anyone with the link sees what it is for; joining needs an account (sign in or sign up)."""
    try:
        row = orgs.open_invitation(token)
    except ServiceError:
        return render_template("console/organisations/invitation.html", invitation=None), 404
    if request.method == "POST" and current_user.is_authenticated and row.account_id is not None:
        try:
            orgs.accept(actor(), current_user._get_current_object(), row)
        except ServiceError as error:
            flash(error.message, "error")
            return render_template("console/organisations/invitation.html", invitation=row, token=token), error.status
        session[ACCOUNT_KEY] = row.account_id
        flash(f"You joined {row.account.name}.")
        return redirect(url_for("console.home"))
    return render_template("console/organisations/invitation.html", invitation=row, token=token,
                           signup_open=current_app.config["SWITCHBOARD"].signup != "closed")
