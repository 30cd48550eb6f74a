"""The console's start page: balance, today's and this month's spend, the base URL, first steps, and notices of
scheduled price changes to the models the account uses and of new terms."""
from __future__ import annotations

import time

from flask import current_app, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select

from controlplane import lifecycle_notices
from controlplane.budgets import day_start, month_start
from controlplane.console import bp
from controlplane.console.access import console_view, current_scope, live_balance
from controlplane.extensions import db
from controlplane.models import ApiKey, RequestLog, UsageRollup


def spend_since(scope, since) -> tuple[int, int]:
    """(µ$ spent, requests) in the scope since `since`, from the hourly rollups."""
    row = db.session.execute(select(func.coalesce(func.sum(UsageRollup.cost), 0), func.coalesce(func.sum(UsageRollup.requests), 0))
                             .where(scope.rollups_clause(), UsageRollup.bucket >= since)).one()
    return int(row[0]), int(row[1])


@bp.get("/")
def home():
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    if current_user.is_operator:
        return redirect(url_for("admin.home"))
    return dashboard()


@console_view
def dashboard():
    scope = current_scope()
    now = time.time()
    balance, held = live_balance(scope.account.id)
    today, today_requests = spend_since(scope, day_start(now))
    month, month_requests = spend_since(scope, month_start(now))
    keys = db.session.scalar(select(func.count()).select_from(ApiKey).where(scope.keys_clause()))
    recent = list(db.session.scalars(select(RequestLog).where(scope.logs_clause()).order_by(RequestLog.started_at.desc()).limit(5)))
    base_url = (current_app.config["SWITCHBOARD"].public_url or "").rstrip("/") + "/v1"
    return render_template("console/home.html", scope=scope, balance=balance, held=held, today=today, today_requests=today_requests,
                           month=month, month_requests=month_requests, keys=keys, recent=recent, base_url=base_url,
                           price_changes=lifecycle_notices.price_changes_for(scope.rollups_clause()), terms=lifecycle_notices.upcoming_terms())
