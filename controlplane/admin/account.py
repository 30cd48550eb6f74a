"""Operator console: the signed-in operator's own account — two-factor sign-in and the sessions
they are signed in with (the same services the user console's account page uses)."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, session, url_for
from flask_login import current_user, logout_user

from controlplane import account_security
from controlplane.admin import OPERATORS
from controlplane.admin.common import actor, confirm, confirmed
from controlplane.auth import require_roles
from controlplane.services import ServiceError, sessions

bp = Blueprint("account", __name__, url_prefix="/account")
signed_in = require_roles(*OPERATORS)


@bp.get("/")
@signed_in
def index():
    current = sessions.current(current_user.id)
    return render_template("admin/account/index.html", sessions=sessions.active(current_user),
                           current_id=current.id if current else None, device=sessions.device)


@bp.post("/sessions/<int:session_id>/end")
@signed_in
def end_session(session_id: int):
    try:
        sessions.revoke(actor(), current_user, session_id)
    except ServiceError:
        abort(404)
    flash("That session is signed out.")
    return redirect(url_for(".index"))


@bp.post("/sessions/end-all")
@signed_in
def end_all():
    if not confirmed():
        return confirm("Sign out of every session, including this one?", "Log out everywhere", url_for(".index"))
    sessions.revoke_all(actor(), current_user._get_current_object())
    logout_user()
    session.clear()
    flash("You are signed out everywhere, including here.")
    return redirect(url_for("auth.login"))


account_security.add_routes(bp, signed_in, "base.html", "admin.account.index")
