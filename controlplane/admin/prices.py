"""Operator console: model prices — current and scheduled, setting (7 days' notice unless a reason
is given), cancelling a scheduled change, JSON import/export, and served models with no price."""
from __future__ import annotations

import json

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import DateTimeLocalField, IntegerField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed
from controlplane.admin.forms import scoped, utc
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ModelPrice, utcnow
from controlplane.price_fields import PRICE_FIELDS
from controlplane.queries.pagination import Page, page_number
from controlplane.services import ServiceError, price_admin, prices as price_service

bp = Blueprint("prices", __name__, url_prefix="/prices")
PER_PAGE = 100


class PriceForm(FlaskForm):
    model = StringField("Model", validators=[DataRequired(message="Name the model."), Length(max=200)])
    effective_from = DateTimeLocalField("Effective from (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()],
                                        description="Defaults to 7 days from now, the notice the terms promise")
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
    return PriceForm(formdata=None, model=model, effective_from=_default_when(), **values)


def _render(form=None, import_form=None, status=200):
    form = form or _prefilled()
    import_form = import_form or ImportForm(formdata=None, effective_from=_default_when())
    scoped(form, "price")
    scoped(import_form, "import")
    q = (request.args.get("q") or "").strip()
    return render_template("admin/prices/list.html", page=_page(q), q=q, form=form, import_form=import_form, fields=PRICE_FIELDS,
                           unpriced=price_admin.unpriced_models(), now=utcnow()), status


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
    try:
        row = price_service.set_price(actor(), form.model.data, effective_from=utc(form.effective_from.data), reason=form.reason.data,
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
