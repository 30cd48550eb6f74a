"""The admin API's card payments: the list with Stripe's ids and filters, one payment, and the
refund-request queue — listed with the terms computed now, approved through the fake Stripe once,
declined with a note — as the console does them."""
from __future__ import annotations

from controlplane import ledger
from controlplane.models.payments import NOTE_MAX
from controlplane.services import api_tokens, card_refunds
from tests import factories
from tests.console import person
from tests.integration.test_refunds import charge
from tests.payments import card_payments, paid_topup, start, stripe_fake  # noqa: F401  (fixtures)


def client_of(app, role: str, email: str):
    _, secret = api_tokens.create_token(factories.ACTOR, person(role, email), "ci")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


def test_payments_and_the_card_refund_queue_through_the_admin_api(sql_app, card_payments):
    app = sql_app
    api = client_of(app, "operator", "script@example.com")
    web = app.test_client()
    ana, bo = factories.user(email="ana@example.com"), factories.user(email="bo@example.com")
    paid = paid_topup(web, card_payments, ana, "20")
    other = paid_topup(web, card_payments, bo, "10")
    pending, _ = start(ana, "15")  # opened Checkout, never paid

    listed = api.get("/admin/api/v1/payments").json
    assert [p["id"] for p in listed["data"]] == [pending, other, paid]
    first = api.get(f"/admin/api/v1/payments/{paid}").json
    assert (first["status"], first["amount_micro_usd"], first["account_id"]) == ("paid", 20_000_000, ana.account_id)
    assert first["payment_intent_id"].startswith("pi_") and first["checkout_session_id"].startswith("cs_")
    assert [p["id"] for p in api.get("/admin/api/v1/payments?status=pending").json["data"]] == [pending]
    assert [p["id"] for p in api.get(f"/admin/api/v1/payments?account_id={bo.account_id}").json["data"]] == [other]
    assert api.get("/admin/api/v1/payments/999999").status_code == 404

    charge(ana, 5_000_000, "req_spent")
    asked = card_refunds.request(factories.ACTOR, ana.id, ana.account, paid, "not needed")
    declined = card_refunds.request(factories.ACTOR, bo.id, bo.account, other, "changed my mind")
    queue = api.get("/admin/api/v1/card-refund-requests?status=pending").json["data"]
    assert [(r["id"], r["terms"]["refundable_micro_usd"], r["terms"]["days_left"]) for r in queue] == \
        [(declined.id, 10_000_000, 14), (asked.id, 15_000_000, 14)]

    reader = client_of(app, "support", "support@example.com")  # reads the queue, refunds no card
    assert reader.post(f"/admin/api/v1/card-refund-requests/{asked.id}/approve").status_code == 403
    approved = api.post(f"/admin/api/v1/card-refund-requests/{asked.id}/approve")
    assert approved.status_code == 200 and approved.json["status"] == "approved"
    assert approved.json["amount_micro_usd"] == 15_000_000 and approved.json["stripe_refund_id"].startswith("re_")
    assert ledger.stored_balance(ana.account_id) == 0 == ledger.sum_of_entries(ana.account_id)
    again = api.post(f"/admin/api/v1/card-refund-requests/{asked.id}/approve")
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"

    no_note = api.post(f"/admin/api/v1/card-refund-requests/{declined.id}/decline", json={"note": " "})
    assert no_note.status_code == 400 and no_note.json["error"]["param"] == "note"
    too_long = api.post(f"/admin/api/v1/card-refund-requests/{declined.id}/decline", json={"note": "x" * (NOTE_MAX + 1)})
    assert too_long.status_code == 400 and too_long.json["error"]["param"] == "note"
    for wrong in ({"note": 5}, ["a list"]):
        assert api.post(f"/admin/api/v1/card-refund-requests/{declined.id}/decline", json=wrong).status_code == 400
    done = api.post(f"/admin/api/v1/card-refund-requests/{declined.id}/decline", json={"note": "used for a promotion"})
    assert (done.json["status"], done.json["decision_note"]) == ("declined", "used for a promotion")
    assert ledger.stored_balance(bo.account_id) == 10_000_000
    assert api.get(f"/admin/api/v1/payments/{paid}").json["refunded_micro_usd"] == 15_000_000
