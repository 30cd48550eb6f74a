"""The operator console under /admin: one blueprint per area, nested under `admin`."""
from __future__ import annotations

from flask import Blueprint, redirect, url_for

from controlplane.auth import require_roles
from controlplane.models import Role

bp = Blueprint("admin", __name__, url_prefix="/admin")
OPERATORS = (Role.ADMIN, Role.OPERATOR, Role.SUPPORT)
WRITERS = (Role.ADMIN, Role.OPERATOR)


@bp.get("/")
@require_roles(*OPERATORS)
def home():
    return redirect(url_for("admin.channels.index"))


def register(app) -> None:
    app.register_blueprint(bp)


# Areas attach to the parent once, at import, so several apps (tests) can register the parent.
from controlplane.admin import channel_probe, channels, prices, users  # noqa: E402

for _child in (channels.bp, channel_probe.bp, prices.bp, users.bp):
    bp.register_blueprint(_child)
