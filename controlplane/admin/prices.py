"""Operator console: model prices, current and scheduled."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateTimeLocalField, StringField, SubmitField
from wtforms.validators import DataRequired, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.forms import attach_error
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ModelPrice, utcnow
from controlplane.services import ServiceError, prices as price_service
from controlplane.services.base import Actor
from controlplane.snapshot import current_and_upcoming, price_view

bp = Blueprint("prices", __name__, url_prefix="/prices")


class PriceForm(FlaskForm):
    model = StringField("Model", validators=[DataRequired()])
    input = StringField("Input $/1M tokens", validators=[DataRequired()])
    output = StringField("Output $/1M tokens", validators=[DataRequired()])
    cache_read = StringField("Cache read $/1M tokens", validators=[Optional()], description="Empty: billed as input")
    cache_write = StringField("Cache write $/1M tokens", validators=[Optional()], description="Empty: billed as input")
    reasoning = StringField("Reasoning $/1M tokens", validators=[Optional()], description="Empty: billed as output")
    per_request = StringField("Per request $", validators=[Optional()])
    effective_from = DateTimeLocalField("Effective from (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    reason = StringField("Reason", validators=[Optional()], description="Needed for a change with less than 7 days' notice")
    submit = SubmitField("Save price")


@bp.route("/", methods=["GET", "POST"])
@require_roles(*OPERATORS)
def index():
    form = PriceForm()
    if request.method == "GET":
        form.effective_from.data = (utcnow() + price_service.NOTICE).replace(tzinfo=None, second=0, microsecond=0)
    status = 200
    if request.method == "POST":
        if current_user.role not in {str(r) for r in WRITERS}:
            return redirect(url_for(".index")), 403
        if form.validate_on_submit():
            when = form.effective_from.data
            try:
                price_service.set_price(
                    Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr),
                    form.model.data,
                    input=form.input.data,
                    output=form.output.data,
                    cache_read=form.cache_read.data,
                    cache_write=form.cache_write.data,
                    reasoning=form.reasoning.data,
                    per_request=form.per_request.data,
                    effective_from=when.replace(tzinfo=utcnow().tzinfo) if when else None,
                    reason=form.reason.data,
                )
            except ServiceError as error:
                attach_error(form, error)
                status = 400
            else:
                flash(f"Price for {form.model.data} saved.")
                return redirect(url_for(".index"))
        else:
            status = 400
    rows = list(db.session.scalars(select(ModelPrice).order_by(ModelPrice.model, ModelPrice.effective_from)))
    now = utcnow()
    visible = {(p.model, p.effective_from) for p in current_and_upcoming([price_view(r) for r in rows], now.timestamp())}
    shown = [r for r in rows if (r.model, r.effective_from.timestamp()) in visible]
    return render_template("admin/prices/list.html", prices=shown, form=form, now=now), status
