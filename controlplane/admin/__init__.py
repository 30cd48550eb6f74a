"""The operator console under /admin: one blueprint per area, nested under `admin`.

Roles: admin does everything, operator everything but operator management, support
reads everything and may refund requests. Every view names the roles it allows.
"""
from __future__ import annotations

from flask import Blueprint, redirect, url_for

from controlplane.auth import require_roles
from controlplane.models import Role

bp = Blueprint("admin", __name__, url_prefix="/admin")
OPERATORS = (Role.ADMIN, Role.OPERATOR, Role.SUPPORT)  # may read
WRITERS = (Role.ADMIN, Role.OPERATOR)  # may change things
ADMINS = (Role.ADMIN,)  # may manage operators
REFUNDERS = OPERATORS  # support may refund requests


@bp.app_context_processor
def _permissions() -> dict:
    """Templates hide buttons a role may not use (the views refuse them regardless)."""
    from flask import current_app

    from controlplane.admin.common import can_write, is_admin

    def has_endpoint(name: str) -> bool:  # areas other branches add (e.g. redemption codes) join the nav
        return name in current_app.view_functions

    return {"can_write": can_write(), "is_admin": is_admin(), "has_endpoint": has_endpoint}


@bp.get("/")
@require_roles(*OPERATORS)
def home():
    return redirect(url_for("admin.dashboard.index"))


def register(app) -> None:
    app.register_blueprint(bp)


# Areas attach to the parent once, at import, so several apps (tests) can register the parent.
from controlplane.admin import (  # noqa: E402
    account, audit, bans, channel_keys, channel_probe, channels, dashboard, groups, logs, operators, organisations, payments, prices,
    redemption, refunds, status, tokens, user_actions, users,
)

for _child in (dashboard.bp, channels.bp, channel_probe.bp, prices.bp, groups.bp, users.bp, organisations.bp, bans.bp, refunds.bp,
               payments.bp, logs.bp, audit.bp, operators.bp, tokens.bp, redemption.bp, account.bp, status.bp):
    bp.register_blueprint(_child)
_ = (channel_keys, user_actions)  # these add routes to the channels and users blueprints

from controlplane.admin import dead_letters  # noqa: E402 - usage events ingestion could not write
from controlplane.admin import disruption, terms  # noqa: E402 - goodwill credit for a disruption; terms versions

bp.register_blueprint(dead_letters.bp)
bp.register_blueprint(disruption.bp)
bp.register_blueprint(terms.bp)
