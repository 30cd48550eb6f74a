"""Card payments in both consoles, against the fake Stripe: a customer (or an organisation's owner
or admin) chooses an amount and billing details and is sent to Checkout; the return page says
pending until the webhook credits; invoices as HTML and PDF, emailed once; refund requests asked
for by the customer and approved by an operator after a confirmation; the operator's settings
(secrets write-only) and a day's reconciliation against Stripe's list."""
from __future__ import annotations

from sqlalchemy import select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import BillingProfile, Invoice, Payment, RefundRequest, StripeSettings
from controlplane.services import organisations
from tests import factories
from tests.console import person as staff, post, sign_in, text
from tests.helpers import csrf_token, post_form
from tests.integration.console.conftest import client_for, person
from tests.integration.console.test_alerts_and_mail import inbox, run_jobs  # noqa: F401  (fixture)
from tests.payments import card_payments, configure, deliver, stripe_fake  # noqa: F401  (fixtures)


def pay_through_the_console(client, fake, preset: str = "25000000", **fields):
    data = {"preset": preset, "amount": "", "name": "Ana Example Ltd", "address": "2 Prompt Road\nLeeds", "tax_id": "GB999", **fields}
    return post_form(client, "/billing/topup", data, token_from="/billing/topup")


def test_the_top_up_page_sends_the_customer_to_checkout_and_back(app, ana, as_ana, card_payments):
    shown = as_ana.get("/billing/topup")
    # The form's answer is a redirect to Stripe: Chromium holds it to the page's form-action.
    assert f"form-action 'self' https://checkout.stripe.com {card_payments.url};" in shown.headers["Content-Security-Policy"]
    page = text(shown)
    assert "$10.00" in page and "$25.00" in page and "$50.00" in page and "Billing address" in page
    response = pay_through_the_console(as_ana, card_payments)
    assert response.status_code == 303 and response.headers["Location"].startswith(card_payments.url + "/pay/cs_")
    payment = db.session.scalar(select(Payment))
    assert (payment.amount, payment.status, payment.billing_tax_id, payment.account_id) == (25_000_000, "pending", "GB999", ana.account_id)
    created = card_payments.sessions[payment.checkout_session_id]
    assert created["success_url"].endswith("/billing/topup/return?session_id={CHECKOUT_SESSION_ID}")
    back = text(as_ana.get(f"/billing/topup/return?session_id={payment.checkout_session_id}"))
    assert "Waiting for the payment" in back and 'http-equiv="refresh"' in back
    assert deliver(app.test_client(), card_payments, card_payments.pay(payment.checkout_session_id)).status_code == 200
    back = text(as_ana.get(f"/billing/topup/return?session_id={payment.checkout_session_id}"))
    assert "Payment received" in back and "INV-000001" in back
    assert ledger.stored_balance(ana.account_id) == 35_000_000  # $10 from the fixture + $25


def test_another_amount_outside_the_limits_changes_nothing(app, as_ana, card_payments):
    response = pay_through_the_console(as_ana, card_payments, preset="other", amount="2")
    assert response.status_code == 400 and "The smallest top-up is $5.00" in text(response)
    assert db.session.scalar(select(Payment)) is None
    assert db.session.scalar(select(BillingProfile)) is None  # an invalid submit changes nothing, the details included
    assert pay_through_the_console(as_ana, card_payments, preset="other", amount="7.25").status_code == 303
    assert db.session.scalar(select(Payment.amount)) == 7_250_000


def test_without_stripe_keys_the_page_says_card_payments_are_not_available(app, as_ana):
    assert "not available on this gateway yet" in text(as_ana.get("/billing/topup"))
    assert pay_through_the_console(as_ana, None).status_code == 503
    assert db.session.scalar(select(Payment)) is None


def test_an_organisations_admin_tops_it_up_and_a_member_may_not(app, ana, as_ana, card_payments):
    org = organisations.create_organisation(factories.ACTOR, ana, "Acme")
    bob, carol = person("bob@example.com"), person("carol@example.com")
    for who, role in ((bob, "admin"), (carol, "member")):
        _, token = organisations.invite(factories.ACTOR, organisations.membership(org.id, ana.id), None, role)
        organisations.accept(factories.ACTOR, who, organisations.open_invitation(token))
    as_bob, as_carol = client_for(app, bob), client_for(app, carol)
    for client in (as_bob, as_carol):
        client.post("/account/switch", data={"account_id": str(org.id), "csrf_token": csrf_token(client, "/organisation")})
    assert as_carol.get("/billing/topup").status_code == 403
    assert as_carol.get("/billing/payments").status_code == 403
    assert pay_through_the_console(as_bob, card_payments).status_code == 303
    payment = db.session.scalar(select(Payment))
    assert payment.account_id == org.id and payment.user_id == bob.id


def test_invoices_print_download_and_stay_private(app, ana, as_ana, bob, as_bob, card_payments, inbox):
    pay_through_the_console(as_ana, card_payments)
    payment = db.session.scalar(select(Payment))
    deliver(app.test_client(), card_payments, card_payments.pay(payment.checkout_session_id))
    invoice = db.session.scalar(select(Invoice))
    page = text(as_ana.get(f"/billing/invoices/{invoice.id}"))
    for fact in ("INV-000001", "Switchboard Ltd", "GB123456789", "Ana Example Ltd", "2 Prompt Road", "GB999", "$25.00",
                 payment.payment_intent_id, payment.checkout_session_id, "data-print"):
        assert fact in page, fact
    pdf = as_ana.get(f"/billing/invoices/{invoice.id}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF") and pdf.headers["Content-Type"] == "application/pdf"
    assert 'filename="INV-000001.pdf"' in pdf.headers["Content-Disposition"] and b"Invoice INV-000001" in pdf.data  # its title
    assert as_bob.get(f"/billing/invoices/{invoice.id}").status_code == 404
    assert as_bob.get(f"/billing/invoices/{invoice.id}.pdf").status_code == 404
    run_jobs()
    mails = [m for m in inbox.messages if "Invoice INV-000001" in m["Subject"]]
    assert len(mails) == 1 and "$25.00" in mails[0]["Subject"] and f"/billing/invoices/{invoice.id}" in mails[0].get_payload()
    from workers import mail

    assert mail.send_invoice(invoice.id) == 0  # a retried job sends nothing twice


def test_a_refund_asked_in_the_console_is_approved_by_an_operator(app, ana, as_ana, card_payments, inbox):
    pay_through_the_console(as_ana, card_payments)
    payment = db.session.scalar(select(Payment))
    deliver(app.test_client(), card_payments, card_payments.pay(payment.checkout_session_id))
    listing = text(as_ana.get("/billing/payments"))
    assert "Refund $25.00" in listing and "14 days left" in listing
    ask = post_form(as_ana, f"/billing/payments/{payment.id}/refund", {"reason": "wrong card"}, token_from="/billing/payments")
    assert ask.status_code == 200 and "Refund $25.00 to your card?" in text(ask) and db.session.scalar(select(RefundRequest)) is None
    done = post_form(as_ana, f"/billing/payments/{payment.id}/refund", {"reason": "wrong card", "confirmed": "yes"}, token_from="/billing/payments")
    assert done.status_code == 302
    request = db.session.scalar(select(RefundRequest))
    assert (request.status, request.reason) == ("pending", "wrong card")
    operator = sign_in(app.test_client(), staff("operator"))
    queue = text(operator.get("/admin/payments/refund-requests"))
    assert "wrong card" in queue and "Refund $25.00 to the card" in queue
    confirm = post(operator, f"/admin/payments/refund-requests/{request.id}/approve")
    assert "Refund $25.00 to ana@example.com" in text(confirm) and db.session.get(RefundRequest, request.id).status == "pending"
    assert post(operator, f"/admin/payments/refund-requests/{request.id}/approve", confirm=True).status_code == 302
    db.session.expire_all()
    assert db.session.get(RefundRequest, request.id).status == "approved"
    assert ledger.stored_balance(ana.account_id) == 10_000_000
    assert "approved" in text(as_ana.get("/billing/payments"))
    run_jobs()
    told = [m for m in inbox.messages if m["Subject"].startswith("Refund approved")]
    assert len(told) == 1 and told[0]["To"] == "ana@example.com" and "$25.00 back to your card" in told[0]["Subject"]


def test_a_declined_refund_tells_the_customer_why(app, ana, as_ana, card_payments, inbox):
    pay_through_the_console(as_ana, card_payments)
    payment = db.session.scalar(select(Payment))
    deliver(app.test_client(), card_payments, card_payments.pay(payment.checkout_session_id))
    post_form(as_ana, f"/billing/payments/{payment.id}/refund", {"reason": "", "confirmed": "yes"}, token_from="/billing/payments")
    request = db.session.scalar(select(RefundRequest))
    operator = sign_in(app.test_client(), staff("operator"))
    assert post(operator, f"/admin/payments/refund-requests/{request.id}/decline", {"note": ""}).status_code == 302
    assert db.session.get(RefundRequest, request.id).status == "pending"  # no reason: nothing decided
    post(operator, f"/admin/payments/refund-requests/{request.id}/decline", {"note": "bought for a promotion"})
    db.session.expire_all()
    assert db.session.get(RefundRequest, request.id).status == "declined"
    assert "bought for a promotion" in text(as_ana.get("/billing/payments"))
    run_jobs()
    told = [m for m in inbox.messages if m["Subject"] == "Refund request declined"]
    assert len(told) == 1 and "bought for a promotion" in told[0].get_payload(decode=True).decode()
    assert ledger.stored_balance(ana.account_id) == 35_000_000


def test_the_operator_sets_stripe_keys_which_are_stored_encrypted_and_shown_masked(app, stripe_fake):
    admin = sign_in(app.test_client(), staff("admin"))
    form = {"publishable_key": "pk_test_abc", "secret_key": "sk_test_supersecret_9876", "webhook_secret": "whsec_signing_5555",
            "presets": "10, 20", "min_amount": "5", "max_amount": "200", "seller_name": "Switchboard Ltd", "seller_address": "1 Relay St",
            "seller_tax_id": "GB1", "seller_email": "billing@example.com", "invoice_prefix": "SB-2027-"}
    assert post(admin, "/admin/payments/settings", form).status_code == 302
    row = db.session.get(StripeSettings, 1)
    assert "supersecret" not in (row.secret_key_encrypted or "") and row.secret_key_last4 == "9876"
    page = text(admin.get("/admin/payments/settings"))
    assert "••••9876" in page and "••••5555" in page and "supersecret" not in page and "signing_5555" not in page
    assert post(admin, "/admin/payments/settings", {**form, "secret_key": "", "webhook_secret": ""}).status_code == 302
    from controlplane.services import payment_settings

    assert payment_settings.load().secret_key == "sk_test_supersecret_9876"  # empty kept the stored one
    bad = post(admin, "/admin/payments/settings", {**form, "secret_key": "not-a-key", "min_amount": "300"})
    assert bad.status_code == 400 and payment_settings.load().secret_key == "sk_test_supersecret_9876"


def test_reconciling_a_day_finds_a_lost_webhook_and_credits_it_once(app, ana, as_ana, card_payments):
    pay_through_the_console(as_ana, card_payments)
    payment = db.session.scalar(select(Payment))
    card_payments.pay(payment.checkout_session_id)  # paid on Stripe; the webhook is lost
    operator = sign_in(app.test_client(), staff("operator"))
    day = payment.created_at.date().isoformat()
    page = text(operator.get(f"/admin/payments/reconcile?day={day}"))
    assert "paid on Stripe, not credited here" in page and "Credit from Stripe" in page
    assert post(operator, "/admin/payments/reconcile/credit", {"payment_id": payment.id, "day": day}, confirm=True).status_code == 302
    assert post(operator, "/admin/payments/reconcile/credit", {"payment_id": payment.id, "day": day}, confirm=True).status_code == 302
    assert ledger.stored_balance(ana.account_id) == 35_000_000  # credited once
    assert "Stripe and Switchboard agree" in text(operator.get(f"/admin/payments/reconcile?day={day}"))
    listing = text(operator.get("/admin/payments/"))
    assert payment.checkout_session_id in listing and "INV-000001" in listing


def test_a_dispute_tells_the_operators_once(app, ana, card_payments, inbox):
    from dataclasses import replace

    from controlplane.runtime import runtime
    from workers import mail

    rt = runtime()
    rt.settings = replace(rt.settings, alert_emails=("ops@example.com",))
    as_ana = client_for(app, ana)
    pay_through_the_console(as_ana, card_payments)
    payment = db.session.scalar(select(Payment))
    client = app.test_client()
    deliver(client, card_payments, card_payments.pay(payment.checkout_session_id))
    intent = db.session.get(Payment, payment.id).payment_intent_id
    deliver(client, card_payments, card_payments.dispute(intent))
    run_jobs()
    alerts = [m for m in inbox.messages if m["To"] == "ops@example.com"]
    assert len(alerts) == 1 and "Disputed card payment" in alerts[0]["Subject"] and "$25.00" in alerts[0].get_payload()
    assert mail.send_payment_alert(payment.id) == 0
    support = sign_in(app.test_client(), staff("support"))
    assert "disputed" in text(support.get("/admin/payments/?flagged=1"))
    assert "Disputed card payment" in text(support.get(f"/admin/users/{ana.id}"))
