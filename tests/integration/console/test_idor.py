"""Every object route of the user console, called with another user's ids: 404, and nothing changes.
The same for an organisation member reaching for another member's objects."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import ApiKey, Invitation, LedgerEntry, Membership
from controlplane.services import organisations, redemption
from tests import factories
from tests.helpers import csrf_token

from .conftest import client_for, event, ingest, organisation, person


@pytest.fixture
def bobs(app, bob, served):
    """Bob's objects: a key, a request, a receipt, an organisation with a member and an invitation."""
    key, _ = factories.api_key(bob, name="bob's key")
    logged = event(key)
    ingest(logged)
    receipt = db.session.scalar(select(LedgerEntry).where(LedgerEntry.account_id == bob.account_id, LedgerEntry.kind == "topup"))
    org = organisation(bob, "Bob Inc")
    helper = person("helper@example.com")
    by = organisations.membership(org.id, bob.id)
    invitation, token = organisations.invite(factories.ACTOR, by, None, "member")
    organisations.accept(factories.ACTOR, helper, organisations.open_invitation(token))
    other_invite, _ = organisations.invite(factories.ACTOR, by, "later@example.com", "member")
    member = organisations.membership(org.id, helper.id)
    return {"key": key.id, "request": logged.request_id, "entry": receipt.id, "org": org.id, "member": member.id,
            "invitation": other_invite.id}


GETS = ["/keys/{key}", "/keys/{key}/edit", "/keys/{key}/delete", "/usage/requests/{request}", "/usage/?key={key}",
        "/usage/series.json?key={key}", "/usage/export.csv?key={key}", "/billing/receipts/{entry}", "/playground/requests/{request}"]
POSTS = [("/keys/{key}/edit", {"name": "pwned"}), ("/keys/{key}/status", {"status": "disabled"}), ("/keys/{key}/delete", {}),
         ("/account/switch", {"account_id": "{org}"})]


@pytest.mark.parametrize("path", GETS)
def test_reading_another_users_objects_is_404(as_ana, bobs, path):
    assert as_ana.get(path.format(**bobs)).status_code == 404


@pytest.mark.parametrize("path,data", POSTS)
def test_changing_another_users_objects_is_404_and_changes_nothing(as_ana, bobs, path, data):
    token = csrf_token(as_ana, "/keys/")
    response = as_ana.post(path.format(**bobs), data={**{k: v.format(**bobs) for k, v in data.items()}, "csrf_token": token})
    assert response.status_code == 404
    key = db.session.get(ApiKey, bobs["key"])
    assert (key.name, key.status) == ("bob's key", "enabled")


@pytest.mark.parametrize("path", ["/organisation/members/{member}/role", "/organisation/members/{member}/allowance",
                                  "/organisation/members/{member}/remove", "/organisation/invitations/{invitation}/revoke"])
def test_managing_another_organisations_members_is_404(app, ana, as_ana, bobs, path):
    organisation(ana, "Ana Co")  # ana manages an organisation of her own…
    as_ana.post("/account/switch", data={"account_id": str(db.session.scalar(select(Membership.account_id).where(Membership.user_id == ana.id))),
                                         "csrf_token": csrf_token(as_ana, "/organisation")})
    response = as_ana.post(path.format(**bobs), data={"role": "owner", "allowance": "0", "csrf_token": csrf_token(as_ana, "/organisation")})
    assert response.status_code == 404  # …but Bob's members are not hers
    assert db.session.get(Membership, bobs["member"]).role == "member"
    assert db.session.get(Invitation, bobs["invitation"]).revoked_at is None


def test_a_playground_token_for_another_users_key_is_404(as_ana, bobs):
    response = as_ana.post("/playground/token", json={"key_id": bobs["key"]}, headers={"X-CSRFToken": csrf_token(as_ana, "/playground/")})
    assert response.status_code == 404


def test_other_users_data_never_shows_in_lists(as_ana, bobs):
    for path in ("/keys/", "/usage/", "/billing/ledger", "/", "/organisation", "/playground/"):
        page = as_ana.get(path).get_data(as_text=True)
        assert "bob&#39;s key" not in page and "Bob Inc" not in page and bobs["request"] not in page, path
    csv = as_ana.get("/usage/export.csv").get_data(as_text=True)
    assert csv.count("\n") == 1  # the header only


class TestOrganisationRoles:
    """In an organisation, a member sees their own keys and usage; owners and admins see all."""

    @pytest.fixture
    def acme(self, app, ana, bob, served):
        org = organisation(ana, "Acme")
        owner = organisations.membership(org.id, ana.id)
        _, token = organisations.invite(factories.ACTOR, owner, bob.email, "member")
        organisations.accept(factories.ACTOR, bob, organisations.open_invitation(token))
        anas_key, _ = factories.api_key(ana, name="ana-org-key", account_id=org.id)
        bobs_key, _ = factories.api_key(bob, name="bob-org-key", account_id=org.id)
        ana_call, bob_call = event(anas_key, cost=3_000), event(bobs_key, cost=5_000)
        ingest(ana_call, bob_call)
        redemption_entry = _redeemed_into(ana, org)
        return {"org": org, "ana_key": anas_key.id, "bob_key": bobs_key.id, "ana_request": ana_call.request_id,
                "bob_request": bob_call.request_id, "entry": redemption_entry}

    def _in(self, client, org):
        client.post("/account/switch", data={"account_id": str(org.id), "csrf_token": csrf_token(client, "/organisation")})
        return client

    def test_a_member_sees_only_their_own_keys_and_requests(self, app, bob, acme):
        client = self._in(client_for(app, bob), acme["org"])
        keys = client.get("/keys/").get_data(as_text=True)
        assert "bob-org-key" in keys and "ana-org-key" not in keys
        assert client.get(f"/keys/{acme['ana_key']}").status_code == 404
        assert client.get(f"/usage/requests/{acme['ana_request']}").status_code == 404
        assert client.get(f"/usage/requests/{acme['bob_request']}").status_code == 200
        usage = client.get("/usage/").get_data(as_text=True)
        assert acme["ana_request"] not in usage and "$0.005000" in usage and "$0.008000" not in usage

    def test_a_member_cannot_open_the_organisations_bill(self, app, bob, acme):
        client = self._in(client_for(app, bob), acme["org"])
        assert client.get("/billing/ledger").status_code == 403
        assert client.get(f"/billing/receipts/{acme['entry']}").status_code == 404
        assert "Your allowance this month" in client.get("/billing/").get_data(as_text=True)
        redeem = client.post("/billing/redeem", data={"code": "X", "csrf_token": csrf_token(client, "/billing/")})
        assert redeem.status_code == 403

    def test_the_owner_sees_every_members_keys_usage_and_the_bill(self, app, ana, acme):
        client = self._in(client_for(app, ana), acme["org"])
        keys = client.get("/keys/").get_data(as_text=True)
        assert "bob-org-key" in keys and "ana-org-key" in keys and "bob@example.com" in keys
        assert client.get(f"/usage/requests/{acme['bob_request']}").status_code == 200
        assert "$0.008000" in client.get("/usage/").get_data(as_text=True)
        ledger = client.get("/billing/ledger").get_data(as_text=True)
        assert acme["bob_request"] in ledger and "redemption" in ledger
        assert client.get(f"/billing/receipts/{acme['entry']}").status_code == 200

    def test_the_personal_account_does_not_show_organisation_objects(self, app, ana, acme):
        client = client_for(app, ana)  # personal scope
        assert client.get(f"/keys/{acme['ana_key']}").status_code == 404
        assert "ana-org-key" not in client.get("/keys/").get_data(as_text=True)


def _redeemed_into(user, org) -> int:
    _, codes = redemption.generate_batch(factories.ACTOR, "test", "5", 1)
    return redemption.redeem(factories.ACTOR, user, org, codes[0]).id
