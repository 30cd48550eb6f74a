"""A fake Stripe API on a real socket, speaking what the official `stripe` library sends and reads:
form-encoded bodies with bracketed keys, `Authorization: Bearer sk_…`, `Idempotency-Key`, JSON
objects and lists (`data`, `has_more`), Stripe's error envelope.

Endpoints: checkout sessions (create, retrieve, list by `created` with `starting_after`), payment
intents (retrieve, `latest_charge` expandable) and refunds (create). Tests act as the customer and the card network through `pay`, `fail`,
`refund_on_dashboard`, `dispute`, and get each resulting webhook event signed the way Stripe signs
them: `Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.http import FakeServer, Handler

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{next(_ids):06d}{'x' * 14}"


def parse_form(body: str) -> dict:
    """`a[b][0][c]=1` → {"a": {"b": [{"c": "1"}]}}, as Stripe reads its form bodies."""
    out: dict = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node: dict = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(out)


def _lists(node):
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


class StripeHandler(Handler):
    server_version = "fake-stripe"

    def _error(self, status: int, message: str, kind: str = "invalid_request_error"):
        self.send_json(status, {"error": {"type": kind, "message": message}})

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.fake.secret_key}":
            self._error(401, "Invalid API Key provided.", "authentication_error")
            return False
        return True

    def _form(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return parse_form(self.rfile.read(length).decode() if length else "")

    def do_GET(self):
        url = urlsplit(self.path)
        self.fake.record(method="GET", path=url.path, query=url.query)
        if url.path.startswith("/pay/"):  # the hosted Checkout page a customer is sent to
            return self._checkout_page(url.path.removeprefix("/pay/"))
        if not self._authorised():
            return
        if url.path == "/v1/checkout/sessions":
            return self.send_json(200, self.fake.list_sessions(parse_form(url.query)))
        intent = re.fullmatch(r"/v1/payment_intents/(\w+)", url.path)
        if intent:
            return self._payment_intent(intent.group(1), parse_form(url.query))
        match = re.fullmatch(r"/v1/checkout/sessions/([\w]+)", url.path)
        if match and match.group(1) in self.fake.sessions:
            return self.send_json(200, self.fake.sessions[match.group(1)])
        self._error(404, f"No such checkout.session: '{match.group(1) if match else url.path}'")

    def _payment_intent(self, intent: str, query: dict):
        charge = self.fake.charges.get(intent)
        if charge is None:
            return self._error(404, f"No such payment_intent: '{intent}'")
        expanded = "latest_charge" in (query.get("expand") or [])
        self.send_json(200, {"id": intent, "object": "payment_intent", "amount": charge["amount"], "currency": charge["currency"],
                             "status": "succeeded", "latest_charge": charge if expanded else charge["id"], "metadata": charge["metadata"]})

    def _checkout_page(self, session_id: str):
        session = self.fake.sessions.get(session_id)
        body = (f"<!doctype html><title>Fake Checkout</title><h1>Pay {session['amount_total'] / 100:.2f} "
                f"{session['currency'].upper()}</h1><p>{session_id}</p>" if session else "<h1>No such session</h1>").encode()
        self.send_response(200 if session else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        url = urlsplit(self.path)
        form = self._form()
        self.fake.record(method="POST", path=url.path, form=form, idempotency_key=self.headers.get("Idempotency-Key"))
        if not self._authorised():
            return
        key = (url.path, self.headers.get("Idempotency-Key"))
        with self.fake.lock:
            if key[1] and key in self.fake.idempotent:
                return self.send_json(200, self.fake.idempotent[key])
        if url.path == "/v1/checkout/sessions":
            status, body = 200, self.fake.create_session(form)
        elif url.path == "/v1/refunds":
            status, body = self.fake.create_refund(form)
        else:
            return self._error(404, f"Unrecognized request URL (POST: {url.path}).")
        if status == 200 and key[1]:
            with self.fake.lock:
                self.fake.idempotent[key] = body
        self.send_json(status, body)


class FakeStripe(FakeServer):
    handler_class = StripeHandler

    def __init__(self, secret_key: str = "sk_test_fake_4242", webhook_secret: str = "whsec_fake_signing"):
        super().__init__()
        self.secret_key, self.webhook_secret = secret_key, webhook_secret
        self.sessions: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}  # by payment intent
        self.disputes: dict[str, dict] = {}  # by dispute id
        self.refunds: list[dict] = []
        self.idempotent: dict[tuple, dict] = {}
        self.on_refund = None  # a test's hook, called with each refund before the API answers
        self.now: int | None = None  # `created` of new objects: the current time unless a test pins it

    def clock(self) -> int:
        return self.now if self.now is not None else int(time.time())

    def reset(self) -> None:
        """Forget every object (a fake shared by a module starts each test empty, as the database does)."""
        with self.lock:
            self.sessions.clear(), self.charges.clear(), self.refunds.clear(), self.idempotent.clear(), self.requests.clear()
        self.on_refund, self.now = None, None

    @property
    def url(self) -> str:
        return self.origin

    # --- the API ---------------------------------------------------------------------------
    def create_session(self, form: dict) -> dict:
        item = form["line_items"][0]
        amount = int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
        sid = new_id("cs")
        session = {"id": sid, "object": "checkout.session", "url": f"{self.url}/pay/{sid}", "status": "open", "payment_status": "unpaid",
                   "amount_total": amount, "currency": item["price_data"]["currency"], "payment_intent": None, "mode": form.get("mode"),
                   "client_reference_id": form.get("client_reference_id"), "metadata": form.get("metadata", {}),
                   "customer_email": form.get("customer_email"), "success_url": form.get("success_url"),
                   "cancel_url": form.get("cancel_url"), "payment_method_types": ["card"], "created": self.clock(),
                   "intent_metadata": (form.get("payment_intent_data") or {}).get("metadata", {})}
        with self.lock:
            self.sessions[sid] = session
        return session

    def list_sessions(self, query: dict) -> dict:
        created = query.get("created") or {}
        rows = sorted(self.sessions.values(), key=lambda s: (-s["created"], s["id"]))
        rows = [s for s in rows if int(created.get("gte", 0)) <= s["created"] < int(created.get("lt", 2**62))]
        if query.get("starting_after"):
            ids = [s["id"] for s in rows]
            rows = rows[ids.index(query["starting_after"]) + 1:]
        limit = int(query.get("limit", 10))
        return {"object": "list", "url": "/v1/checkout/sessions", "data": rows[:limit], "has_more": len(rows) > limit}

    def create_refund(self, form: dict) -> tuple[int, dict]:
        charge = self.charges.get(form.get("payment_intent", ""))
        if charge is None:
            return 404, {"error": {"type": "invalid_request_error", "message": f"No such payment_intent: '{form.get('payment_intent')}'"}}
        amount = int(form.get("amount") or charge["amount"] - charge["amount_refunded"])
        if amount > charge["amount"] - charge["amount_refunded"]:
            return 400, {"error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                                   "message": f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on charge"}}
        with self.lock:
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            refund = {"id": new_id("re"), "object": "refund", "amount": amount, "charge": charge["id"], "payment_intent": charge["payment_intent"],
                      "status": "succeeded", "currency": charge["currency"], "created": self.clock()}
            self.refunds.append(refund)
        if self.on_refund is not None:  # Stripe's webhook for it, delivered before this answer
            self.on_refund(refund)
        return 200, refund

    # --- the customer and the card network -------------------------------------------------
    def _charge_for(self, session: dict, method: str = "card") -> dict:
        intent = new_id("pi")
        session["payment_intent"] = intent
        charge = {"id": new_id("ch"), "object": "charge", "amount": session["amount_total"], "amount_refunded": 0, "refunded": False,
                  "currency": session["currency"], "payment_intent": intent, "metadata": dict(session["intent_metadata"]),
                  "payment_method_details": {"type": method}}
        self.charges[intent] = charge
        return charge

    def pay(self, session_id: str, delayed: bool = False, method: str = "card") -> dict:
        """The customer pays on the Checkout page: `checkout.session.completed`, paid at once, or
        unpaid for a method that settles later (then `settle` or `fail`)."""
        session = self.sessions[session_id]
        self._charge_for(session, method)
        session["status"] = "complete"
        session["payment_status"] = "unpaid" if delayed else "paid"
        return self.event("checkout.session.completed", session)

    def settle(self, session_id: str) -> dict:
        session = self.sessions[session_id]
        session["payment_status"] = "paid"
        return self.event("checkout.session.async_payment_succeeded", session)

    def fail(self, session_id: str) -> dict:
        return self.event("checkout.session.async_payment_failed", self.sessions[session_id])

    def expire(self, session_id: str) -> dict:
        """The customer never paid: Stripe expires the session (after 24 hours by default)."""
        self.sessions[session_id]["status"] = "expired"
        return self.event("checkout.session.expired", self.sessions[session_id])

    def refund_on_dashboard(self, payment_intent: str, cents: int | None = None) -> dict:
        """An operator refunds on Stripe's dashboard: `charge.refunded` with the cumulative amount."""
        status, _ = self.create_refund({"payment_intent": payment_intent, **({"amount": str(cents)} if cents else {})})
        assert status == 200
        return self.charge_refunded(payment_intent)

    def charge_refunded(self, payment_intent: str) -> dict:
        return self.event("charge.refunded", self.charges[payment_intent])

    def dispute(self, payment_intent: str, cents: int | None = None) -> dict:
        charge = self.charges[payment_intent]
        dispute = {"id": new_id("dp"), "object": "dispute", "amount": cents or charge["amount"], "charge": charge["id"],
                   "payment_intent": payment_intent, "status": "needs_response", "reason": "fraudulent", "metadata": {}}
        self.disputes[dispute["id"]] = dispute
        return self.event("charge.dispute.created", dispute)

    def close_dispute(self, dispute_id: str, status: str) -> dict:
        """The bank decides: `won`, `lost` (or `warning_closed` for an inquiry)."""
        self.disputes[dispute_id]["status"] = status
        return self.event("charge.dispute.closed", self.disputes[dispute_id])

    def event(self, kind: str, obj: dict) -> dict:
        public = {k: v for k, v in obj.items() if k != "intent_metadata"}
        return {"id": new_id("evt"), "object": "event", "type": kind, "created": self.clock(), "livemode": False,
                "api_version": "2024-06-20", "data": {"object": json.loads(json.dumps(public))}}

    def signed(self, event: dict, timestamp: int | None = None, secret: str | None = None) -> tuple[bytes, dict]:
        """The body and headers Stripe would POST for `event`."""
        body = json.dumps(event).encode()
        return body, {"Stripe-Signature": sign(body, secret or self.webhook_secret, timestamp), "Content-Type": "application/json"}
