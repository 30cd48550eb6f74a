"""Telling people things: email through SMTP and signed webhooks. Used by workers (alerts,
receipts, channel state changes); never on the relay's path.

Configuration comes from the settings; with no SMTP host, email is skipped (and reported as such).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage

import orjson
from geventhttpclient.response import HTTPParseError

from relay.egress import Egress, EgressRefused
from relay.http_client import HttpClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = ""
    port: int = 587
    username: str = ""
    password: str = ""
    sender: str = "switchboard@localhost"
    starttls: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    detail: str = ""


def send_email(smtp: SmtpSettings, to: str, subject: str, body: str) -> Delivery:
    if not smtp.configured:
        return Delivery(False, "SMTP is not configured")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = smtp.sender, to, subject
    message.set_content(body)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=15) as server:
            if smtp.starttls:
                server.starttls()
            if smtp.username:
                server.login(smtp.username, smtp.password)
            server.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        log.warning("email to %s failed: %s", to, error)
        return Delivery(False, f"{type(error).__name__}: {error}")
    return Delivery(True)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "timestamp.body", as receivers verify it (Stripe-style)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def send_webhook(url: str, event: str, payload: dict, *, egress: Egress, secret: str = "", timeout: float = 10.0) -> Delivery:
    """POST a signed event through the egress guard (`egress` says whose URL it is). Only the status
    counts: the receiver's body is never read, and a redirect is a failed delivery, not followed."""
    body = orjson.dumps({"event": event, "data": payload, "sent_at": int(time.time())})
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "Switchboard-Webhook", "X-Switchboard-Event": event,
               "X-Switchboard-Timestamp": stamp, "Connection": "close"}
    if secret:
        headers["X-Switchboard-Signature"] = "sha256=" + signature(secret, stamp, body)
    try:
        exchange = HttpClient(pool_size=0, egress=egress).request("POST", url, headers, body, timeout, timeout)
    except (OSError, HTTPParseError, ValueError) as error:
        log.info("webhook %s not delivered: %s", event, error)
        refused = error.__cause__ if isinstance(error.__cause__, EgressRefused) else None
        return Delivery(False, f"not sent: {refused}" if refused else type(error).__name__)
    exchange.close()
    if exchange.status >= 300:
        return Delivery(False, f"HTTP {exchange.status}")
    return Delivery(True)
