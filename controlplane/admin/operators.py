"""Operator console: operator management (admins only) — who runs the console, in which role."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, PasswordField, SelectField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane.admin import ADMINS
from controlplane.admin.common import actor, failed
from controlplane.admin.forms import choices
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import OPERATOR_ROLES, Role, User
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, users as user_service

bp = Blueprint("operators", __name__, url_prefix="/operators")
ROLE_HELP = {"admin": "everything, including operators and roles", "operator": "everything but operator management",
             "support": "reads everything, refunds requests"}


class OperatorForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(message="Enter an email address."), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(message="Set a first password (8+ characters)."), Length(max=200)])
    role = SelectField("Role", choices=choices((r.value, f"{r.value} — {ROLE_HELP[r.value]}") for r in OPERATOR_ROLES), default="support")
    submit = SubmitField("Add operator")


def _render(form=None, status=200):
    page = paginate(select(User).where(User.role.in_([r.value for r in OPERATOR_ROLES])).order_by(User.role, User.email),
                    page_number(request.args))
    return render_template("admin/operators/list.html", page=page, form=form or OperatorForm(formdata=None), roles=ROLE_HELP), status


@bp.get("/")
@require_roles(*ADMINS)
def index():
    return _render()


@bp.post("/")
@require_roles(*ADMINS)
def create():
    form = OperatorForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    try:
        user = user_service.create_operator(actor(), form.email.data, form.password.data, Role(form.role.data))
    except ServiceError as error:
        db.session.rollback()
        return _render(form, failed(form, error))
    flash(f"{user.email} can now sign in as {user.role}.")
    return redirect(url_for(".index"))
