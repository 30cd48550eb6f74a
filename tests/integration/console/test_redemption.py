"""Redemption codes: generated in batches by operators, redeemed once into an account as a ledger
entry of kind `redemption` — once even when many people try the same code at the same moment."""
from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from controlplane import ledger
from controlplane.extensions import db
from controlplane.models import Account, LedgerEntry, RedemptionCode, Role, User, utcnow
from controlplane.runtime import runtime
from controlplane.services import ServiceError, redemption, users
from controlplane.services.base import Actor
from tests import factories
from tests.helpers import login, post_form

from .conftest import PASSWORD, person


def test_concurrent_attempts_redeem_one_code_exactly_once(sql_app):
    people = [factories.user(f"racer{i}@example.com") for i in range(8)]
    _, codes = redemption.generate_batch(factories.ACTOR, "race", "5", 1)
    who = [(u.id, u.account_id) for u in people]
    barrier = threading.Barrier(len(who))
    outcomes: dict[int, object] = {}

    def attempt(user_id: int, account_id: int):
        with sql_app.app_context():
            user, account = db.session.get(User, user_id), db.session.get(Account, account_id)
            barrier.wait()
            try:
                redemption.redeem(Actor(name=user.email, id=user.id), user, account, codes[0].lower())
                outcomes[user_id] = "redeemed"
            except ServiceError as error:
                outcomes[user_id] = error.status
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt, args=pair) for pair in who]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.session.expire_all()
    winners = [uid for uid, outcome in outcomes.items() if outcome == "redeemed"]
    assert len(winners) == 1 and sorted(o for o in outcomes.values() if o != "redeemed") == [409] * 7
    entries = list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "redemption")))
    winner = db.session.get(User, winners[0])
    assert [(e.account_id, e.amount) for e in entries] == [(winner.account_id, 5_000_000)]
    row = db.session.scalar(select(RedemptionCode))
    assert (row.redeemed_by, row.account_id, row.ledger_entry_id) == (winner.id, winner.account_id, entries[0].id)
    assert ledger.stored_balance(winner.account_id) == ledger.sum_of_entries(winner.account_id) == 5_000_000
    assert runtime().quota.account(winner.account_id)[0] == 5_000_000
    assert db.session.scalar(select(func.sum(Account.balance))) == 5_000_000


def test_codes_are_stored_hashed_and_encrypted_never_in_clear(app):
    _, codes = redemption.generate_batch(factories.ACTOR, "promo", "1", 3)
    for row in db.session.scalars(select(RedemptionCode)):
        assert codes[0] not in (row.code_hash, row.code_encrypted)
        assert redemption.plaintext(row) in codes
    assert len(set(codes)) == 3 and all(len(c) == 23 for c in codes)


@pytest.mark.parametrize("setup,message", [
    ("expired", "expired"), ("withdrawn", "withdrawn"), ("unknown", "not valid"), ("used", "already been redeemed")])
def test_a_code_that_cannot_be_redeemed_says_why_and_moves_no_money(app, setup, message):
    ana = person("ana@example.com")
    batch, codes = redemption.generate_batch(factories.ACTOR, "promo", "1", 1, expires_at=utcnow() + timedelta(days=1))
    code = codes[0]
    if setup == "expired":
        batch.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    elif setup == "withdrawn":
        redemption.withdraw_unused(factories.ACTOR, batch)
    elif setup == "unknown":
        code = "AAAAA-BBBBB-CCCCC-DDDDD"
    else:
        redemption.redeem(factories.ACTOR, person(), person().account, code)
    with pytest.raises(ServiceError) as refused:
        redemption.redeem(factories.ACTOR, ana, ana.account, code)
    assert message in refused.value.message
    assert ana.account.balance == 0


def test_redeeming_in_the_console_credits_the_balance_and_shows_a_receipt(app, as_ana, ana):
    _, codes = redemption.generate_batch(factories.ACTOR, "Spring promotion", "2.50", 1)
    response = post_form(as_ana, "/billing/redeem", {"code": codes[0].replace("-", " ")}, token_from="/billing/")
    assert response.status_code == 302
    page = as_ana.get("/billing/").get_data(as_text=True)
    assert "Code redeemed: $2.50 added" in page and "$12.50" in page  # 10 + 2.50, live
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.kind == "redemption"))
    receipt = as_ana.get(f"/billing/receipts/{entry.id}").get_data(as_text=True)
    assert f"R-{entry.id:08d}" in receipt and "Spring promotion" in receipt and "$2.50" in receipt
    again = post_form(as_ana, "/billing/redeem", {"code": codes[0]}, token_from="/billing/")
    assert again.status_code == 409 and "already been redeemed" in again.get_data(as_text=True)


def test_wrong_codes_are_throttled(app, as_ana):
    for _ in range(10):
        assert post_form(as_ana, "/billing/redeem", {"code": "WRONG-WRONG"}, token_from="/billing/").status_code == 400
    assert post_form(as_ana, "/billing/redeem", {"code": "WRONG-WRONG"}, token_from="/billing/").status_code == 429


@pytest.fixture
def operator(app, client):
    users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.OPERATOR)
    login(client, "op@example.com", PASSWORD)
    return client


def test_operators_generate_a_batch_export_it_and_see_who_redeemed(app, operator):
    response = post_form(operator, "/admin/redemption/", {"name": "Launch", "amount": "5", "count": "3", "expires_at": "2099-01-01T00:00"})
    assert response.status_code == 302
    exported = operator.get(response.headers["Location"] + "/codes.csv")
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"unused"} and rows[0]["amount_usd"] == "5.000000"
    ana = person("ana@example.com")
    redemption.redeem(factories.ACTOR, ana, ana.account, rows[1]["code"])
    detail = operator.get(response.headers["Location"]).get_data(as_text=True)
    assert "ana@example.com" in detail and rows[1]["code"] not in detail  # the page masks codes
    after = list(csv.DictReader(io.StringIO(operator.get(response.headers["Location"] + "/codes.csv").get_data(as_text=True))))
    assert [r["redeemed_by"] for r in after] == ["", "ana@example.com", ""]
    listing = operator.get("/admin/redemption/").get_data(as_text=True)
    assert "Launch" in listing and "$5.00" in listing


def test_an_invalid_batch_explains_and_creates_nothing(app, operator):
    for fields in ({"amount": "0"}, {"count": "0"}, {"count": "10001"}, {"expires_at": "2001-01-01T00:00"}, {"name": ""}):
        data = {"name": "x", "amount": "1", "count": "2", "expires_at": "", **fields}
        assert post_form(operator, "/admin/redemption/", data).status_code == 400, fields
    assert db.session.scalar(select(RedemptionCode.id)) is None


def test_support_sees_batches_but_cannot_generate_or_export_codes(app, client):
    users.create_operator(factories.ACTOR, "help@example.com", PASSWORD, Role.SUPPORT)
    batch, _ = redemption.generate_batch(factories.ACTOR, "promo", "1", 2)
    login(client, "help@example.com", PASSWORD)
    assert client.get(f"/admin/redemption/{batch.id}").status_code == 200
    assert client.get(f"/admin/redemption/{batch.id}/codes.csv").status_code == 403
    assert post_form(client, "/admin/redemption/", {"name": "x", "amount": "1", "count": "1"}).status_code == 403


def test_customers_cannot_open_the_operator_page(app, as_ana):
    assert as_ana.get("/admin/redemption/").status_code == 403
