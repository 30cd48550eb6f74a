"""Signing in and out, and the role checks every view and API call goes through."""
from __future__ import annotations

import functools
import time

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane.extensions import db, login_manager
from controlplane.login_guard import LoginGuard
from controlplane.models import Role, User, utcnow
from controlplane.redirects import safe_next
from controlplane.runtime import runtime
from controlplane.services import sessions

bp = Blueprint("auth", __name__)



@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real hash to check against when the email is unknown, so both paths cost the same time."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash("not-a-password", method="scrypt")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    submit = SubmitField("Sign in")


def wants_json() -> bool:
    if request.path.startswith("/admin/api/") or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


@login_manager.user_loader
def load_user(session_id: str):
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version) or not user.is_active:
        return None
    if not sessions.is_live(user):  # ended from the session list (services/sessions.py)
        return None
    return user


@login_manager.unauthorized_handler
def unauthorized():
    if wants_json():
        return jsonify(error={"message": "Sign in first.", "code": "unauthenticated"}), 401
    return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))


def require_roles(*roles: Role):
    """Allow only signed-in users with one of `roles`: JSON callers get 403, browsers a redirect."""
    allowed = {str(r) for r in roles}

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in allowed:
                if wants_json():
                    return jsonify(error={"message": "Your role does not allow this.", "code": "forbidden"}), 403
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorate


def _guard() -> LoginGuard:
    settings = current_app.config["SWITCHBOARD"]
    return LoginGuard(runtime().redis, settings.login_attempts_per_minute,
                      settings.login_attempts_per_ip_per_minute, settings.login_delay_cap_seconds)


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        guard, address = _guard(), request.remote_addr or "-"
        verdict = guard.check(email, address)
        if verdict.delay:
            time.sleep(verdict.delay)  # before the password is looked at, so every answer waits alike
        if verdict.refused:
            form.email.errors.append("Too many attempts. Wait a minute and try again.")
            return render_template("auth/login.html", form=form), 429
        user = db.session.scalar(select(User).where(User.email == email))
        ok = check_password_hash(user.password_hash if user and user.password_hash else _dummy_hash(), form.password.data)
        if not user or not user.password_hash or not ok or not user.is_active:
            guard.failed(email, address)
            form.password.errors.append("That email and password do not match an active account.")
            return render_template("auth/login.html", form=form), 401
        session.clear()  # a fresh session at sign-in: nothing from before survives
        login_user(user)
        sessions.start(user)
        user.last_login_at = utcnow()
        db.session.commit()
        default = url_for("admin.home") if user.is_operator else url_for("console.home")
        return redirect(safe_next(request.args.get("next")) or default)
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    sessions.end_current()
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("auth.login"))


def init_app(app) -> None:
    login_manager.login_view = "auth.login"
    app.register_blueprint(bp)
