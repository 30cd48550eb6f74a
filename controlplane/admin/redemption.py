"""Operator console: redemption codes — generate batches (amount, count, expiry), export them as
CSV, see which codes were redeemed, by whom and into which account, withdraw the unused ones."""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import DateTimeLocalField, IntegerField, StringField, SubmitField
from wtforms.validators import DataRequired, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.forms import attach_error
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Account, RedemptionBatch, RedemptionCode, User, utcnow
from controlplane.services import ServiceError, redemption
from controlplane.services.base import Actor
from relay.pricing import micro_to_usd, usd_text

bp = Blueprint("redemption", __name__, url_prefix="/redemption")


class BatchForm(FlaskForm):
    name = StringField("Batch name", validators=[DataRequired()], description="For example “Spring promotion”")
    amount = StringField("Amount per code (USD)", validators=[DataRequired()])
    count = IntegerField("Number of codes", validators=[DataRequired()], default=10)
    expires_at = DateTimeLocalField("Expires (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: never")
    submit = SubmitField("Generate codes")


def _actor() -> Actor:
    return Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr)


def _writer_only() -> None:
    if current_user.role not in {str(r) for r in WRITERS}:
        abort(403)


@bp.route("/", methods=["GET", "POST"])
@require_roles(*OPERATORS)
def index():
    form = BatchForm()
    status = 200
    if request.method == "POST":
        _writer_only()
        if form.validate_on_submit():
            when = form.expires_at.data
            try:
                batch, codes = redemption.generate_batch(_actor(), form.name.data, form.amount.data, form.count.data,
                                                         when.replace(tzinfo=utcnow().tzinfo) if when else None)
            except ServiceError as error:
                attach_error(form, error)
                status = 400
            else:
                flash(f"{len(codes)} codes of {usd_text(batch.amount)} generated. Export them as CSV to hand them out.")
                return redirect(url_for(".detail", batch_id=batch.id))
        else:
            status = 400
    used = dict(db.session.execute(select(RedemptionCode.batch_id, func.count()).where(RedemptionCode.redeemed_at.is_not(None))
                                   .group_by(RedemptionCode.batch_id)).all())
    batches = list(db.session.scalars(select(RedemptionBatch).order_by(RedemptionBatch.id.desc())))
    return render_template("admin/redemption/list.html", batches=batches, used=used, form=form, now=utcnow()), status


def _batch(batch_id: int) -> RedemptionBatch:
    return db.session.get(RedemptionBatch, batch_id) or abort(404)


@bp.get("/<int:batch_id>")
@require_roles(*OPERATORS)
def detail(batch_id: int):
    batch = _batch(batch_id)
    codes = list(db.session.scalars(select(RedemptionCode).where(RedemptionCode.batch_id == batch.id).order_by(RedemptionCode.id)))
    users = {u.id: u.email for u in db.session.scalars(select(User).where(User.id.in_({c.redeemed_by for c in codes if c.redeemed_by})))}
    accounts = {a.id: a.name for a in db.session.scalars(select(Account).where(Account.id.in_({c.account_id for c in codes if c.account_id})))}
    return render_template("admin/redemption/detail.html", batch=batch, codes=codes, users=users, accounts=accounts, now=utcnow())


@bp.get("/<int:batch_id>/codes.csv")
@require_roles(*OPERATORS)
def export(batch_id: int):
    _writer_only()  # the codes are money: support staff see who redeemed, not the codes themselves
    batch = _batch(batch_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["code", "amount_usd", "expires_at", "status", "redeemed_at", "redeemed_by", "account"])
    users = {u.id: u.email for u in db.session.scalars(select(User).join(RedemptionCode, RedemptionCode.redeemed_by == User.id)
                                                       .where(RedemptionCode.batch_id == batch.id))}
    for c in batch.codes:
        state = "redeemed" if c.redeemed_at else ("withdrawn" if c.disabled_at else "unused")
        writer.writerow([redemption.plaintext(c), micro_to_usd(batch.amount).lstrip("$"), batch.expires_at.isoformat() if batch.expires_at else "",
                         state, c.redeemed_at.isoformat() if c.redeemed_at else "", users.get(c.redeemed_by, ""), c.account_id or ""])
    return Response(buffer.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="redemption-batch-{batch.id}.csv"', "Cache-Control": "no-store"})


@bp.post("/<int:batch_id>/withdraw")
@require_roles(*OPERATORS)
def withdraw(batch_id: int):
    _writer_only()
    done = redemption.withdraw_unused(_actor(), _batch(batch_id))
    flash(f"{done} unused codes withdrawn; redeemed ones are unaffected.")
    return redirect(url_for(".detail", batch_id=batch_id))
