"""Operator console: API tokens for the admin JSON API. Each operator manages their own; admins
see and revoke everyone's. A new token's secret is shown once."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateTimeLocalField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin import OPERATORS
from controlplane.admin.common import actor, confirm, confirmed, failed, found, is_admin
from controlplane.admin.forms import utc
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ApiToken
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, api_tokens

bp = Blueprint("tokens", __name__, url_prefix="/tokens")


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(message="Name the token, e.g. after the script that uses it."), Length(max=100)])
    expires_at = DateTimeLocalField("Expires (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: until revoked")
    submit = SubmitField("Create token")


def _render(form=None, status=200):
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if not is_admin():
        query = query.where(ApiToken.user_id == current_user.id)
    page = paginate(query, page_number(request.args))
    return render_template("admin/tokens/list.html", page=page, form=form or TokenForm(formdata=None)), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/")
@require_roles(*OPERATORS)
def create():
    form = TokenForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    try:
        token, secret = api_tokens.create_token(actor(), current_user, form.name.data, utc(form.expires_at.data))
    except ServiceError as error:
        db.session.rollback()
        return _render(form, failed(form, error))
    # Rendered, never redirected: the secret must not travel through the session or a URL.
    return render_template("admin/tokens/created.html", token=token, secret=secret)


@bp.post("/<int:token_id>/revoke")
@require_roles(*OPERATORS)
def revoke(token_id: int):
    token = found(api_tokens.token_by_id, token_id)
    if token.user_id != current_user.id and not is_admin():
        abort(403)
    if not confirmed():
        return confirm(f"Revoke the token {token.name} ({token.prefix}…)? Scripts using it get 401 from now on.", "Revoke token", url_for(".index"))
    try:
        api_tokens.revoke(actor(), token)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"Token {token.name} revoked.")
    return redirect(url_for(".index"))
