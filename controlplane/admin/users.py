"""Operator console: users, their balances, and top-ups."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.forms import attach_error
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ApiKey, LedgerEntry, User
from controlplane.services import ServiceError, billing
from controlplane.services.base import Actor

bp = Blueprint("users", __name__, url_prefix="/users")
PAGE = 50


class TopupForm(FlaskForm):
    amount = StringField("Amount (USD)", validators=[DataRequired()])
    reason = StringField("Reason", validators=[DataRequired()])
    submit = SubmitField("Top up")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    q = (request.args.get("q") or "").strip().lower()
    page = max(int(request.args.get("page", 1) or 1), 1)
    query = select(User).order_by(User.id)
    if q:
        query = query.where(or_(User.email.contains(q), User.id == (int(q) if q.isdigit() else -1)))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    users = list(db.session.scalars(query.limit(PAGE).offset((page - 1) * PAGE)))
    return render_template("admin/users/list.html", users=users, q=q, page=page, pages=max((total + PAGE - 1) // PAGE, 1))


@bp.route("/<int:user_id>", methods=["GET", "POST"])
@require_roles(*OPERATORS)
def detail(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    form = TopupForm()
    status = 200
    if request.method == "POST":
        if current_user.role not in {str(r) for r in WRITERS}:
            abort(403)
        if form.validate_on_submit():
            try:
                entry = billing.topup(Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr), user.account, form.amount.data, form.reason.data)
            except ServiceError as error:
                attach_error(form, error)
                status = 400
            else:
                flash(f"Added ${form.amount.data} to {user.email}.")
                return redirect(url_for(".detail", user_id=user.id))
        else:
            status = 400
    live, held = billing.live_balance(user.account_id)
    entries = list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.account_id == user.account_id).order_by(LedgerEntry.id.desc()).limit(50)))
    keys = list(db.session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id)))
    return render_template("admin/users/detail.html", user=user, form=form, live=live, held=held, entries=entries, keys=keys), status
