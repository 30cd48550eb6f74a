"""Signing in and out, and the role checks every view and API call goes through.

Sign-in is one step (password) or two (password, then a code from the person's authenticator or a
recovery code). Between the two the browser holds only a signed, five-minute pending state naming
the user: no session exists until the code passes, and both steps share the same throttles.
"""
from __future__ import annotations

import functools
import time

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane import totp
from controlplane.extensions import db, login_manager
from controlplane.login_guard import LoginGuard
from controlplane.models import Role, User, utcnow
from controlplane.redirects import safe_next
from controlplane.runtime import runtime
from controlplane.services import sessions, two_factor
from controlplane.services.base import Actor

bp = Blueprint("auth", __name__)
PENDING_KEY = "pending_sign_in"
PENDING_SECONDS = 300  # time to fetch the phone and type the code
# Where an admin who must turn on two-factor sign-in may still go (the operator console's setup pages).
ENROLMENT_ENDPOINTS = frozenset({"static", "auth.logout", "admin.account.two_factor", "admin.account.two_factor_start",
                                 "admin.account.two_factor_confirm"})


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real hash to check against when the email is unknown, so both paths cost the same time."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash("not-a-password", method="scrypt")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    submit = SubmitField("Sign in")


class CodeForm(FlaskForm):
    code = StringField("Authentication code", validators=[DataRequired(message="Enter the code."), Length(max=totp.MAX_CODE_LENGTH)],
                       description="The 6-digit code from your authenticator app, or one of your recovery codes")
    submit = SubmitField("Verify")


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
        if user.two_factor_enabled:
            session.clear()
            session[PENDING_KEY] = _pending_serializer().dumps({"user": user.id, "version": user.session_version})
            return redirect(url_for("auth.code", next=safe_next(request.args.get("next"))))
        return _complete_sign_in(user)
    return render_template("auth/login.html", form=form)


def _pending_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="switchboard-pending-sign-in")


def _pending_user() -> User | None:
    """The user who passed the password step in this browser within the last few minutes."""
    token = session.get(PENDING_KEY)
    if not token:
        return None
    try:
        state = _pending_serializer().loads(token, max_age=PENDING_SECONDS)
    except BadSignature:  # SignatureExpired included
        return None
    user = db.session.get(User, int(state.get("user", 0)))
    if user is None or not user.is_active or user.session_version != state.get("version") or not user.two_factor_enabled:
        return None
    return user


def _complete_sign_in(user: User, notice: str | None = None):
    session.clear()  # a fresh session at sign-in: nothing from before survives
    if notice:
        flash(notice, "warn")
    login_user(user)
    sessions.start(user)
    user.last_login_at = utcnow()
    db.session.commit()
    default = url_for("admin.home") if user.is_operator else url_for("console.home")
    return redirect(safe_next(request.args.get("next")) or default)


@bp.route("/login/code", methods=["GET", "POST"])
def code():
    user = _pending_user()
    if user is None:
        session.pop(PENDING_KEY, None)
        flash("Sign in again: the code step lasts five minutes.")
        return redirect(url_for("auth.login", next=safe_next(request.args.get("next"))))
    form = CodeForm()
    if form.validate_on_submit():
        guard, address = _guard(), request.remote_addr or "-"
        verdict = guard.check(user.email, address)
        if verdict.delay:
            time.sleep(verdict.delay)
        if verdict.refused:
            form.code.errors.append("Too many attempts. Wait a minute and try again.")
            return render_template("auth/code.html", form=form), 429
        proof = two_factor.verify(Actor(name=user.email, id=user.id, ip=request.remote_addr), user, form.code.data)
        if not proof.ok:
            guard.failed(user.email, address)
            form.code.errors.append("That code does not match, or it has been used already. Enter the current code.")
            return render_template("auth/code.html", form=form), 401
        notice = f"You signed in with a recovery code; {proof.recovery_left} left. Each one works once." if proof.recovery else None
        return _complete_sign_in(user, notice)
    return render_template("auth/code.html", form=form), 400 if request.method == "POST" else 200


def enforce_two_factor():
    """An admin without two-factor sign-in, where it is required, can only set it up (or sign out)."""
    if not current_app.config["SWITCHBOARD"].require_2fa or request.endpoint in ENROLMENT_ENDPOINTS:
        return None
    if not current_user.is_authenticated or not two_factor.required(current_user, True):
        return None
    if wants_json():
        return jsonify(error={"message": "Turn on two-factor sign-in first.", "code": "two_factor_required"}), 403
    return redirect(url_for("admin.account.two_factor"))


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
    app.before_request(enforce_two_factor)
