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
import requests

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


def send_webhook(url: str, event: str, payload: dict, secret: str = "", timeout: float = 10.0) -> Delivery:
    body = orjson.dumps({"event": event, "data": payload, "sent_at": int(time.time())})
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-Switchboard-Event": event, "X-Switchboard-Timestamp": stamp}
    if secret:
        headers["X-Switchboard-Signature"] = "sha256=" + signature(secret, stamp, body)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as error:
        return Delivery(False, f"{type(error).__name__}")
    if response.status_code >= 300:
        return Delivery(False, f"HTTP {response.status_code}")
    return Delivery(True)
