"""Operator console: card payments — the list with Stripe's ids (flagged disputes first to find),
the refund-request queue with the terms computed (unused part, days left), reconciling a day
against Stripe's list, and the Stripe settings (admins: keys, amounts, seller, invoice series)."""
from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

from controlplane.admin import ADMINS, OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Account, Invoice, Payment, RefundRequest, RefundRequestStatus, User, utcnow
from controlplane.models.payments import ADDRESS_MAX, EMAIL_MAX, NAME_MAX, NOTE_MAX, PREFIX_MAX, STRIPE_ID_MAX, TAX_ID_MAX
from controlplane.queries.pagination import page_number, paginate, row_id
from controlplane.services import ServiceError, card_refunds, payment_settings, payments, stripe_events
from controlplane.stripe_gateway import StripeUnavailable
from relay.pricing import usd_text

bp = Blueprint("payments", __name__, url_prefix="/payments")
STATUSES = ("pending", "paid", "failed")


class SettingsForm(FlaskForm):
    publishable_key = StringField("Publishable key", validators=[Length(max=STRIPE_ID_MAX)], description="pk_live_… or pk_test_…")
    secret_key = PasswordField("Secret key", validators=[Length(max=STRIPE_ID_MAX)], description="sk_… — empty keeps the stored one")
    webhook_secret = PasswordField("Webhook signing secret", validators=[Length(max=STRIPE_ID_MAX)],
                                   description="whsec_… of the endpoint pointing at /stripe/webhook — empty keeps the stored one")
    presets = StringField("Amounts offered (USD)", validators=[Length(max=200)], description="Comma-separated, like 10, 25, 50")
    min_amount = StringField("Smallest top-up (USD)", validators=[DataRequired(), Length(max=20)])
    max_amount = StringField("Largest top-up (USD)", validators=[DataRequired(), Length(max=20)])
    seller_name = StringField("Seller name", validators=[Length(max=NAME_MAX)])
    seller_address = TextAreaField("Seller address", validators=[Length(max=ADDRESS_MAX)])
    seller_tax_id = StringField("Seller tax id", validators=[Length(max=TAX_ID_MAX)])
    seller_email = StringField("Seller email", validators=[Length(max=EMAIL_MAX)])
    invoice_prefix = StringField("Invoice series", validators=[DataRequired(), Length(max=PREFIX_MAX)],
                                 description="A prefix; each series numbers from 1 without gaps. A new prefix starts a new series.")
    submit = SubmitField("Save settings")


class DeclineForm(FlaskForm):
    note = StringField("Why", validators=[DataRequired(message="Say why (the customer sees this)."), Length(max=NOTE_MAX)])
    submit = SubmitField("Decline")


def _emails(account_ids) -> dict[int, str]:
    ids = set(account_ids)
    if not ids:
        return {}
    names = dict(db.session.execute(select(Account.id, Account.name).where(Account.id.in_(ids))).all())
    names.update(dict(db.session.execute(select(User.account_id, User.email).where(User.account_id.in_(ids))).all()))
    return names


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    status = request.args.get("status") if request.args.get("status") in STATUSES else None
    flagged = bool(request.args.get("flagged"))
    query = select(Payment).order_by(Payment.id.desc())
    if status:
        query = query.where(Payment.status == status)
    if flagged:
        query = query.where(Payment.flagged_at.is_not(None))
    if row_id(request.args.get("account")):
        query = query.where(Payment.account_id == row_id(request.args["account"]))
    page = paginate(query, page_number(request.args))
    ids = [p.id for p in page.items]
    invoices = {i.payment_id: i for i in db.session.scalars(select(Invoice).where(Invoice.payment_id.in_(ids)))} if ids else {}
    config = payment_settings.load()
    pending = db.session.scalar(select(db.func.count()).select_from(RefundRequest).where(RefundRequest.status == RefundRequestStatus.PENDING.value))
    return render_template("admin/payments/list.html", page=page, status=status, flagged=flagged, invoices=invoices,
                           names=_emails(p.account_id for p in page.items), config=config, pending_requests=pending)


@bp.get("/invoices/<int:invoice_id>")
@require_roles(*OPERATORS)
def invoice(invoice_id: int):
    row = db.session.get(Invoice, invoice_id)
    if row is None:
        from flask import abort

        abort(404)
    return render_template("admin/payments/invoice.html", invoice=row)


@bp.get("/refund-requests")
@require_roles(*OPERATORS)
def refund_requests():
    show = request.args.get("status") if request.args.get("status") in [s.value for s in RefundRequestStatus] else "pending"
    rows = list(db.session.scalars(select(RefundRequest).where(RefundRequest.status == show).order_by(RefundRequest.id).limit(200)))
    terms = {r.id: card_refunds.terms(r.payment) for r in rows if r.status == RefundRequestStatus.PENDING.value}
    return render_template("admin/payments/refund_requests.html", rows=rows, terms=terms, show=show, names=_emails(r.account_id for r in rows),
                           decline_form=DeclineForm(formdata=None))


@bp.post("/refund-requests/<int:refund_request_id>/approve")
@require_roles(*WRITERS)
def approve(refund_request_id: int):
    row = found(card_refunds.find_request, refund_request_id)
    name = _emails([row.account_id]).get(row.account_id, f"account {row.account_id}")
    try:
        plan = card_refunds.terms(row.payment)
        if plan.refusal:
            raise ServiceError(f"{plan.refusal} Decline the request instead.", status=409)
        if not confirmed():
            return confirm(f"Refund {usd_text(plan.refundable)} to {name}'s card? It leaves their balance at once.",
                           f"Refund {usd_text(plan.refundable)}", url_for(".refund_requests"),
                           details=[("Paid", f"{usd_text(row.payment.amount)} {row.payment.created_at:%Y-%m-%d}"), ("Unused", usd_text(plan.unused)),
                                    ("Days left", str(plan.days_left)), ("Customer's reason", row.reason or "—")])
        done = card_refunds.approve(actor(), refund_request_id)
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for(".refund_requests"))
    flash(f"Refunded {usd_text(done.amount or 0)} to {name}'s card (Stripe {done.stripe_refund_id}).")
    return redirect(url_for(".refund_requests"))


@bp.post("/refund-requests/<int:refund_request_id>/decline")
@require_roles(*WRITERS)
def decline(refund_request_id: int):
    form = DeclineForm()
    if not form.validate_on_submit():
        flash(" ".join(form.note.errors) or "Say why.", "error")
        return redirect(url_for(".refund_requests"))
    try:
        card_refunds.decline(actor(), refund_request_id, form.note.data)
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for(".refund_requests"), 303)
    flash("Refund request declined; the customer sees your reason.")
    return redirect(url_for(".refund_requests"))


def _day() -> date:
    try:
        return date.fromisoformat(request.args.get("day") or request.form.get("day") or "")
    except ValueError:
        return utcnow().date()


@bp.get("/reconcile")
@require_roles(*OPERATORS)
def reconcile():
    day = _day()
    rows, error = [], None
    try:
        rows = payments.reconcile_day(day)
    except StripeUnavailable as refused:
        error = str(refused)
    return render_template("admin/payments/reconcile.html", day=day, rows=rows, error=error, names=_emails(r.payment.account_id for r in rows if r.payment),
                           previous=day - timedelta(days=1), following=day + timedelta(days=1))


@bp.post("/reconcile/credit")
@require_roles(*WRITERS)
def credit_missing():
    payment = db.session.get(Payment, row_id(request.form.get("payment_id")) or 0)
    back = url_for(".reconcile", day=request.form.get("day", ""))
    if payment is None:
        flash("No such payment.", "error")
        return redirect(back)
    if not confirmed():
        return confirm(f"Ask Stripe about payment {payment.id} and credit {usd_text(payment.amount)} if Stripe says it is paid?",
                       f"Credit {usd_text(payment.amount)}", back, danger=False,
                       details=[("Checkout session", payment.checkout_session_id or "—")])
    try:
        outcome = stripe_events.credit_from_stripe(actor(), payment.id)
    except (ServiceError, StripeUnavailable) as error:
        db.session.rollback()
        flash(getattr(error, "message", str(error)), "error")
        return redirect(back)
    flash(f"Payment {payment.id}: {outcome}.")
    return redirect(back)


def _settings_form() -> SettingsForm:
    if request.method == "POST":
        return SettingsForm()
    row = payment_settings.row()
    from controlplane.console import usd_input

    return SettingsForm(formdata=None, publishable_key=row.publishable_key, presets=", ".join(usd_input(p) for p in row.presets or []),
                        min_amount=usd_input(row.min_amount), max_amount=usd_input(row.max_amount), seller_name=row.seller_name,
                        seller_address=row.seller_address, seller_tax_id=row.seller_tax_id, seller_email=row.seller_email,
                        invoice_prefix=row.invoice_prefix)


@bp.route("/settings", methods=["GET", "POST"])
@require_roles(*ADMINS)
def settings():
    form = _settings_form()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                given = {name: form[name].data or "" for name in payment_settings.SettingsInput.__dataclass_fields__}
                payment_settings.save(actor(), payment_settings.SettingsInput(**given))
            except ServiceError as error:
                db.session.rollback()
                status = failed(form, error)
            else:
                flash("Card payment settings saved.")
                return redirect(url_for(".settings"))
        else:
            status = 400
    return render_template("admin/payments/settings.html", form=form, row=payment_settings.row(),
                           webhook_url=url_for("stripe_webhook.receive", _external=True)), status
