"""Low-balance alert settings: a threshold, and whether to email and/or call a webhook. The
worker (workers/alerts.py) sends them, once per crossing."""
from __future__ import annotations

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Account, AlertSetting, utcnow
from controlplane.services.base import Actor, ServiceError, audit, commit


def settings_for(account_id: int) -> AlertSetting | None:
    return db.session.scalar(select(AlertSetting).where(AlertSetting.account_id == account_id))


def save(actor: Actor, account: Account, threshold_usd: str | None, email: bool, webhook_url: str | None) -> AlertSetting:
    threshold = None if threshold_usd in (None, "") else validation.usd(threshold_usd, "threshold")
    url = (webhook_url or "").strip() or None
    if url is not None:
        url = validation.webhook_url(url)  # public addresses only, whatever operators allow upstreams
    if threshold is not None and not email and url is None:
        raise ServiceError("Choose email, a webhook, or both.", "email")
    row = settings_for(account.id)
    if row is None:
        row = AlertSetting(account_id=account.id)
        db.session.add(row)
    before = {"threshold": row.threshold, "email": row.email, "webhook_url": row.webhook_url}
    row.threshold, row.email, row.webhook_url, row.updated_at = threshold, bool(email), url, utcnow()
    row.below = False  # a new setting starts armed: the next check decides afresh
    db.session.flush()
    audit(actor, "alerts.save", "account", account.id, before=before, after={"threshold": threshold, "email": bool(email), "webhook_url": url})
    commit(publish=False)
    return row
