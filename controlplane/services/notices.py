"""Queueing the messages workers send (receipts, invitations): jobs by name, ids as arguments.

Nothing is queued when SMTP is not configured: there would be nobody to send them.
"""
from __future__ import annotations

import logging

from rq import Queue, Retry

from controlplane.runtime import runtime

log = logging.getLogger(__name__)
QUEUE = "default"  # workers/queues.py DEFAULT; by name, so the control plane needs no worker code
TIMEOUT = 60


def _enqueue(job: str, *args) -> None:
    rt = runtime()
    if not rt.settings.smtp.configured:
        return
    try:
        Queue(QUEUE, connection=rt.queue_redis).enqueue(job, *args, job_timeout=TIMEOUT, retry=Retry(max=3, interval=[10, 60, 300]))
    except Exception:
        # The money moved and is committed; a lost email must not turn that into an error page.
        log.exception("could not queue %s%r", job, args)


def receipt(entry_id: int) -> None:
    _enqueue("workers.mail.send_receipt", entry_id)


def invoice(invoice_id: int) -> None:
    _enqueue("workers.mail.send_invoice", invoice_id)


def refund_decision(request_id: int) -> None:
    """The customer hears whether their card refund was approved or declined."""
    _enqueue("workers.mail.send_refund_decision", request_id)


def payment_alert(payment_id: int) -> None:
    """Operators hear of a disputed card payment (the alert addresses)."""
    _enqueue("workers.mail.send_payment_alert", payment_id)


def invitation(invitation_id: int, link: str) -> None:
    _enqueue("workers.mail.send_invitation", invitation_id, link)
