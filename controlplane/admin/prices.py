"""Operator console: model prices — current and scheduled, setting (a model's first price starts now;
a change to a priced model gives 7 days' notice unless a reason is given),
cancelling a scheduled change, JSON import/export, and served models with no price; and model
routes — each model's selection strategy and the aliases that stand for a list of models."""
from __future__ import annotations

import json
from datetime import timedelta

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import DateTimeLocalField, IntegerField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed
from controlplane.admin.forms import choices, scoped, utc
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ModelPrice, ModelRoute, utcnow
from controlplane.price_fields import PRICE_FIELDS
from controlplane.queries.pagination import Page, page_number
from controlplane.services import ServiceError, model_routes, price_admin, prices as price_service

bp = Blueprint("prices", __name__, url_prefix="/prices")
PER_PAGE = 100


class PriceForm(FlaskForm):
    model = StringField("Model", validators=[DataRequired(message="Name the model."), Length(max=200)])
    effective_from = DateTimeLocalField("Effective from (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()],
                                        description="Empty: a model's first price starts now; a change to a priced model "
                                                    "starts in 7 days, the notice the terms promise")
    max_output_tokens = IntegerField("Max output tokens", validators=[Optional(), NumberRange(min=1, message="At least 1, or leave empty.")],
                                     description="Held when a request names no max_tokens; empty: the gateway default")
    reason = StringField("Reason", validators=[Optional(), Length(max=500)], description="Needed for a change with less than 7 days' notice")
    submit = SubmitField("Save price")


# One input per price component, in PRICE_FIELDS order (a new component needs no change here).
for _f in PRICE_FIELDS:
    setattr(PriceForm, _f.name, StringField(f"{_f.label} ({_f.unit})", description=_f.hint,
                                            validators=[DataRequired(message="Enter a price (0 for free).")] if _f.required else [Optional()]))


class ImportForm(FlaskForm):
    file = FileField("Price file (JSON)")
    document = TextAreaField("Or paste JSON", validators=[Optional()])
    effective_from = DateTimeLocalField("Effective from (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()],
                                        description="For entries without their own date")
    reason = StringField("Reason", validators=[Optional(), Length(max=500)], description="Needed for changes with less than 7 days' notice")
    submit = SubmitField("Import prices")


STRATEGIES = [("priority", "Weights as set (default)"), ("latency", "Favour faster, healthier channels"),
              ("cost", "Favour cheaper upstreams (channel cost)")]


class RouteForm(FlaskForm):
    model = StringField("Model or alias", validators=[DataRequired(message="Name the model or alias."), Length(max=200)],
                        description="A served model, or a new name callers can ask for")
    strategy = SelectField("Choosing inside a priority tier", choices=choices(STRATEGIES), default="priority",
                           description="Latency: weight × fastest time to first output ÷ this channel's × (1 − error rate)². "
                                       "Cost: weight × (cheapest channel cost ÷ this channel's)²")
    targets = TextAreaField("Alias for", validators=[Optional(), Length(max=2000)],
                            description="One model per line, tried in order when one fails; empty: not an alias")
    submit = SubmitField("Save route")


def _default_when():
    return (utcnow() + price_service.NOTICE).replace(tzinfo=None, second=0, microsecond=0)


def _page(q: str) -> Page:
    rows = price_admin.visible_rows()
    if q:
        rows = [r for r in rows if q.lower() in r.model.lower()]
    number = page_number(request.args)
    return Page(items=rows[(number - 1) * PER_PAGE:number * PER_PAGE], page=number, per_page=PER_PAGE, total=len(rows))


def _prefilled() -> PriceForm:
    """A blank form, or one holding a model's current price when the operator clicked "Change"."""
    model = (request.args.get("model") or "").strip()
    current = price_service.current_price(model) if model else None
    values = {f.name: price_admin.usd_text(getattr(current, f.name)) for f in PRICE_FIELDS} if current else {}
    if current is not None:
        values["max_output_tokens"] = current.max_output_tokens
    # The date stays empty: the rule fills it in when the form is sent (a rendered "7 days from now" goes stale).
    return PriceForm(formdata=None, model=model, **values)


def _rule(form: PriceForm) -> str:
    """Which notice rule the form's model falls under: "change", "first", or "" (no model named yet)."""
    model = (form.model.data or "").strip()
    if not model:
        return ""
    return "change" if price_service.current_price(model) is not None else "first"


def _render(form=None, import_form=None, route_form=None, status=200):
    form = form or _prefilled()
    import_form = import_form or ImportForm(formdata=None, effective_from=_default_when())
    route_form = route_form or RouteForm(formdata=None)
    scoped(form, "price")
    scoped(import_form, "import")
    scoped(route_form, "route")
    q = (request.args.get("q") or "").strip()
    return render_template("admin/prices/list.html", page=_page(q), q=q, form=form, import_form=import_form, fields=PRICE_FIELDS,
                           unpriced=price_admin.unpriced_models(), now=utcnow(), rule=_rule(form), route_form=route_form,
                           routes=model_routes.all_routes(), strategies=dict(STRATEGIES)), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/")
@require_roles(*WRITERS)
def set_price():
    form = PriceForm()
    if not form.validate_on_submit():
        return _render(form=form, status=400)
    when = utc(form.effective_from.data)
    if when is None and price_service.current_price(form.model.data.strip()) is not None:
        # a change without a date: the notice period, to the next minute; a first price: now
        when = (utcnow() + price_service.NOTICE + timedelta(minutes=1)).replace(second=0, microsecond=0)
    try:
        row = price_service.set_price(actor(), form.model.data, effective_from=when, reason=form.reason.data,
                                      max_output_tokens=form.max_output_tokens.data,
                                      **{f.name: getattr(form, f.name).data for f in PRICE_FIELDS})
    except ServiceError as error:
        db.session.rollback()
        return _render(form=form, status=failed(form, error))
    when = "now" if row.effective_from <= utcnow() else f"from {row.effective_from:%Y-%m-%d %H:%M} UTC"
    flash(f"Price for {row.model} saved; it applies {when}.")
    return redirect(url_for(".index"))


@bp.post("/<int:price_id>/cancel")
@require_roles(*WRITERS)
def cancel(price_id: int):
    row = db.session.get(ModelPrice, price_id)
    if row is None:
        return redirect(url_for(".index")), 404
    if not confirmed():
        return confirm(f"Cancel the price of {row.model} scheduled for {row.effective_from:%Y-%m-%d %H:%M} UTC? The current price stays.",
                       "Cancel scheduled price", url_for(".index"))
    try:
        price_admin.cancel_scheduled(actor(), price_id)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"Scheduled price of {row.model} cancelled.")
    return redirect(url_for(".index"))


@bp.get("/export.json")
@require_roles(*OPERATORS)
def export():
    body = json.dumps(price_admin.export_document(), indent=2)
    return Response(body, mimetype="application/json", headers={"Content-Disposition": "attachment; filename=prices.json"})


@bp.post("/import")
@require_roles(*WRITERS)
def import_prices():
    form = ImportForm()
    if not form.validate_on_submit():
        return _render(import_form=form, status=400)
    upload = request.files.get("file")
    text = upload.read().decode("utf-8", "replace") if upload and upload.filename else (form.document.data or "")
    try:
        document = json.loads(text)
    except ValueError:
        form.document.errors = ["This is not JSON: use a file exported from this page (or the same shape)."]
        return _render(import_form=form, status=400)
    try:
        created = price_admin.import_prices(actor(), document, utc(form.effective_from.data), form.reason.data)
    except ServiceError as error:
        form.document.errors = [error.message]
        return _render(import_form=form, status=error.status if error.status >= 400 else 400)
    flash(f"{len(created)} price(s) imported." if created else "Nothing to import: every price in the file is already set.")
    return redirect(url_for(".index"))


@bp.post("/routes")
@require_roles(*WRITERS)
def set_route():
    form = RouteForm()
    if not form.validate_on_submit():
        return _render(route_form=form, status=400)
    try:
        row = model_routes.set_route(actor(), form.model.data, strategy=form.strategy.data, targets=form.targets.data)
    except ServiceError as error:
        db.session.rollback()
        return _render(route_form=form, status=failed(form, error))
    flash(f"Alias {row.model} saved: {' → '.join(row.targets)}." if row.targets else f"Route of {row.model} saved.")
    return redirect(url_for(".index") + "#model-routes")


@bp.post("/routes/<int:route_id>/delete")
@require_roles(*WRITERS)
def delete_route(route_id: int):
    row = db.session.get(ModelRoute, route_id)
    if row is None:
        return redirect(url_for(".index")), 404
    if not confirmed():
        what = (f"the alias {row.model}: callers asking for it get “model not found”" if row.targets
                else f"the route of {row.model}: it goes back to weights as set")
        return confirm(f"Delete {what}?", "Delete route", url_for(".index"))
    model_routes.delete_route(actor(), route_id)
    flash(f"Route of {row.model} deleted.")
    return redirect(url_for(".index") + "#model-routes")
