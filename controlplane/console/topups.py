"""Billing by card: choose an amount and billing details, pay on Stripe Checkout, come back to a page
that says whether the money is credited yet (only Stripe's webhook credits it); card payments with
their invoices (HTML and PDF); asking for a top-up's unused part back on the card. Personal
accounts and organisations' owners and admins."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import RadioField, StringField, SubmitField, TextAreaField
from wtforms.validators import Length, Optional

from controlplane import invoice_pdf
from controlplane.admin.forms import attach_error
from controlplane.console.access import actor, console_view, managers_only
from controlplane.extensions import db
from controlplane.headers import policy_posting_to
from controlplane.models import Invoice, Payment, RefundRequest
from controlplane.models.payments import ADDRESS_MAX, NAME_MAX, NOTE_MAX, TAX_ID_MAX
from controlplane.runtime import runtime
from controlplane.services import NotFound, ServiceError, card_refunds, payment_settings, payments
from relay.pricing import usd_text

bp = Blueprint("billing_card", __name__, url_prefix="/billing")
CHECKOUT_ORIGIN = "https://checkout.stripe.com"
PAGE = 50
OTHER = "other"


class TopupForm(FlaskForm):
    preset = RadioField("Amount", choices=[], validate_choice=False)
    amount = StringField("Other amount (USD)", validators=[Optional(), Length(max=20)])
    name = StringField("Name or company", validators=[Length(max=NAME_MAX)], description="Printed on the invoice")
    address = TextAreaField("Billing address", validators=[Length(max=ADDRESS_MAX)])
    tax_id = StringField("Tax id (VAT, GST…)", validators=[Length(max=TAX_ID_MAX)], description="Optional")
    submit = SubmitField("Continue to payment")


class RefundAskForm(FlaskForm):
    reason = StringField("Reason (optional)", validators=[Length(max=NOTE_MAX)])
    submit = SubmitField("Ask for a refund")


def _topup_form(config: payment_settings.PaymentConfig, formdata: bool) -> TopupForm:
    scope = managers_only()
    if formdata:
        form = TopupForm()
    else:
        details = payments.profile(scope.account.id)
        default = str(config.presets[0]) if config.presets else OTHER
        form = TopupForm(formdata=None, preset=default, name=details.name or scope.account.name, address=details.address, tax_id=details.tax_id)
    form.preset.choices = [(str(p), usd_text(p)) for p in config.presets] + [(OTHER, "Other amount")]
    return form


def _amount(form: TopupForm) -> str:
    if form.preset.data and form.preset.data != OTHER:
        try:
            from controlplane.console import usd_input

            return usd_input(int(form.preset.data))
        except ValueError:
            pass
    return (form.amount.data or "").strip()


@bp.route("/topup", methods=["GET", "POST"])
@console_view
def topup():
    scope = managers_only()
    config = payment_settings.load()
    form = _topup_form(config, request.method == "POST")
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        try:
            started = payments.start_checkout(
                actor(), current_user, scope.account, _amount(form),
                success_url=url_for(".checkout_return", _external=True) + "?session_id={CHECKOUT_SESSION_ID}",
                cancel_url=url_for(".topup", cancelled=1, _external=True),
                details=payments.BillingDetails(form.name.data or "", form.address.data or "", form.tax_id.data or ""))
            return redirect(started.url, 303)
        except ServiceError as error:
            db.session.rollback()
            attach_error(form, error)
            status = error.status if error.status >= 400 else 400
    elif request.method == "POST":
        status = 400
    if request.args.get("cancelled"):
        flash("Payment cancelled: nothing was charged.")
    response = make_response(render_template("console/billing/topup.html", form=form, config=config, scope=scope), status)
    response.headers["Content-Security-Policy"] = policy_posting_to(*_checkout_origins())
    return response


def _checkout_origins() -> list[str]:
    """Where the form's answer sends the browser: Stripe's Checkout, or the API base's origin where
    the operator moved the Stripe API (a stripe-mock serves its Checkout pages there)."""
    origins = [CHECKOUT_ORIGIN]
    base = urlsplit(runtime().settings.stripe_api_base or "")
    if base.scheme in ("http", "https") and base.netloc:
        origins.append(f"{base.scheme}://{base.netloc}")
    return origins


@bp.get("/topup/return")
@console_view
def checkout_return():
    scope = managers_only()
    payment = payments.payment_for_session(scope.account.id, request.args.get("session_id", "")[:255])
    if payment is None:
        abort(404)
    invoice = db.session.scalar(select(Invoice).where(Invoice.payment_id == payment.id))
    return render_template("console/billing/topup_return.html", payment=payment, invoice=invoice)


@bp.get("/payments")
@console_view
def payment_list():
    scope = managers_only()
    rows = list(db.session.scalars(select(Payment).where(Payment.account_id == scope.account.id).order_by(Payment.id.desc()).limit(PAGE)))
    ids = [p.id for p in rows]
    invoices = {i.payment_id: i for i in db.session.scalars(select(Invoice).where(Invoice.payment_id.in_(ids)))} if ids else {}
    asked = {r.payment_id: r for r in db.session.scalars(select(RefundRequest).where(RefundRequest.payment_id.in_(ids)))} if ids else {}
    terms = {p.id: card_refunds.terms(p) for p in rows if p.status == "paid" and p.id not in asked}
    return render_template("console/billing/payments.html", payments=rows, invoices=invoices, asked=asked, terms=terms,
                           form=RefundAskForm(formdata=None))


@bp.post("/payments/<int:payment_id>/refund")
@console_view
def request_refund(payment_id: int):
    scope = managers_only()
    payment = db.session.get(Payment, payment_id)
    if payment is None or payment.account_id != scope.account.id:
        abort(404)
    form = RefundAskForm()
    if not form.validate_on_submit():
        flash("Keep the reason under 500 characters.", "error")
        return redirect(url_for(".payment_list"))
    plan = card_refunds.terms(payment)
    if request.form.get("confirmed") != "yes" and not plan.refusal:
        return render_template("console/billing/refund_confirm.html", payment=payment, plan=plan, form=form)
    try:
        card_refunds.request(actor(), current_user.id, scope.account, payment_id, form.reason.data)
    except NotFound:
        abort(404)
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for(".payment_list"))
    flash(f"Refund asked for: {usd_text(plan.refundable)} back to your card once an operator approves it.")
    return redirect(url_for(".payment_list"))


def _invoice_or_404(invoice_id: int) -> Invoice:
    scope = managers_only()
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None or invoice.account_id != scope.account.id:
        abort(404)
    return invoice


@bp.get("/invoices/<int:invoice_id>")
@console_view
def invoice(invoice_id: int):
    return render_template("console/billing/invoice.html", invoice=_invoice_or_404(invoice_id))


@bp.get("/invoices/<int:invoice_id>.pdf")
@console_view
def invoice_download(invoice_id: int):
    found = _invoice_or_404(invoice_id)
    response = make_response(invoice_pdf.render(found))
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = f'attachment; filename="{found.code}.pdf"'
    return response
