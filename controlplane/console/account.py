"""A person's own account: sign-up, email and password, two-factor sign-in (account_security.py),
and the sessions they are signed in with."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from controlplane import account_security, throttle
from controlplane.admin.forms import attach_error
from controlplane.console.access import actor, console_view
from controlplane.console.forms import CloseAccountForm, EmailForm, PasswordForm, SignupForm
from controlplane.extensions import db
from controlplane.models import utcnow
from controlplane.services import ServiceError, accounts, closure, organisations, sessions, terms
from controlplane.services.accounts import SignupMode

bp = Blueprint("account", __name__)
SIGNUPS_PER_HOUR = 5  # per address: enough for a team behind one NAT, too few for a script
CLOSE_ATTEMPTS_PER_HOUR = 5  # wrong passwords or codes when closing: a stolen session cannot guess the password


def signup_mode() -> SignupMode:
    return SignupMode(current_app.config["SWITCHBOARD"].signup)


def _invitation(token: str | None):
    if not token:
        return None
    try:
        return organisations.open_invitation(token)
    except ServiceError:
        return None


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("console.home"))
    form = SignupForm()
    token = request.args.get("invite") or form.invite.data
    form.invite.data = token
    invitation, mode = _invitation(token), signup_mode()
    allowed = mode == SignupMode.OPEN or (mode == SignupMode.INVITE and invitation is not None)
    if not allowed:
        return render_template("console/account/signup.html", form=None, mode=mode, invitation=invitation, terms=None), 403
    if request.method == "GET" and invitation is not None and invitation.email:
        form.email.data = invitation.email
    status = 200
    if form.validate_on_submit():
        if throttle.exceeded("signup", [request.remote_addr or "-"], SIGNUPS_PER_HOUR, 3600):
            form.email.errors.append("Too many sign-ups from your address. Try again in an hour.")
            return render_template("console/account/signup.html", form=form, mode=mode, invitation=invitation, terms=terms.in_force()), 429
        try:
            user = accounts.sign_up(form.email.data, form.password.data, mode, token, request.remote_addr)
        except ServiceError as error:
            attach_error(form, error)
            status = error.status if error.status in (403, 409) else 400
        else:
            throttle.count("signup", [request.remote_addr or "-"], 3600)
            session.clear()
            login_user(user)
            sessions.start(user)
            user.last_login_at = utcnow()  # signing up signs in
            db.session.commit()
            flash("Welcome to Switchboard. Create an API key to start.")
            return redirect(url_for("console.home"))
    elif request.method == "POST":
        status = 400
    return render_template("console/account/signup.html", form=form, mode=mode, invitation=invitation, terms=terms.in_force()), status


def _page(email_form=None, password_form=None, status=200):
    email_form = email_form or EmailForm(formdata=None, email=current_user.email)
    current = sessions.current(current_user.id)
    return render_template("console/account/index.html", email_form=email_form, password_form=password_form or PasswordForm(formdata=None),
                           sessions=sessions.active(current_user), current_id=current.id if current else None, device=sessions.device), status


@bp.get("/account")
@console_view
def index():
    return _page()


@bp.post("/account/email")
@console_view
def email():
    form = EmailForm()
    if not form.validate_on_submit():
        return _page(email_form=form, status=400)
    try:
        accounts.change_email(actor(), current_user, form.email.data, form.password.data)
    except ServiceError as error:
        attach_error(form, error)
        return _page(email_form=form, status=400)
    flash("Your email address is changed.")
    return redirect(url_for(".index"))


@bp.post("/account/password")
@console_view
def password():
    form = PasswordForm()
    if not form.validate_on_submit():
        return _page(password_form=form, status=400)
    user = current_user._get_current_object()
    try:
        accounts.change_password(actor(), user, form.current_password.data, form.new_password.data)
    except ServiceError as error:
        attach_error(form, error)
        return _page(password_form=form, status=400)
    login_user(user)  # the session version moved on: keep this session, every other one has ended
    flash("Your password is changed, and every other session is signed out.")
    return redirect(url_for(".index"))


@bp.post("/account/sessions/<int:session_id>/end")
@console_view
def end_session(session_id: int):
    try:
        sessions.revoke(actor(), current_user, session_id)
    except ServiceError:
        from flask import abort

        abort(404)
    flash("That session is signed out.")
    return redirect(url_for(".index"))


@bp.post("/account/sessions/end-all")
@console_view
def end_all():
    sessions.revoke_all(actor(), current_user._get_current_object())
    logout_user()
    session.clear()
    flash("You are signed out everywhere, including here.")
    return redirect(url_for("auth.login"))


def _closing(form=None, status=200):
    user = current_user._get_current_object()
    try:
        plan, refused = closure.plan(user), None
    except ServiceError as error:
        plan, refused = None, error.message
    return render_template("console/account/close.html", form=form or CloseAccountForm(formdata=None), plan=plan, refused=refused), status


@bp.get("/account/close")
@console_view
def close():
    return _closing()


@bp.post("/account/close")
@console_view
def close_confirmed():
    """Close the account after signing in again: keys revoked at once, personal data replaced, the
    ledger and request metadata kept."""
    form = CloseAccountForm()
    if not form.validate_on_submit():
        return _closing(form, 400)
    user = current_user._get_current_object()
    if throttle.exceeded("close", [str(user.id)], CLOSE_ATTEMPTS_PER_HOUR, 3600):
        form.password.errors.append("Too many attempts. Try again in an hour.")
        return _closing(form, 429)
    try:
        accounts.reauthenticate(actor(), user, form.password.data, form.code.data)
        closure.close(actor(), user, "closed by the account holder")
    except ServiceError as error:
        db.session.rollback()
        if error.field in ("password", "code"):  # a wrong password or code counts; a refusal to close does not
            throttle.count("close", [str(user.id)], 3600)
        attach_error(form, error)
        return _closing(form, error.status if error.status in (403, 409) else 400)
    logout_user()
    session.clear()
    flash("Your account is closed. Your API keys no longer work, and your personal details are removed.")
    return redirect(url_for("auth.login"))


account_security.add_routes(bp, console_view, "console/layout.html", "console.account.index", prefix="/account")
