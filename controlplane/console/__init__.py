"""The user console at `/`: one blueprint per area, nested under `console`.

Areas: home (here), account (sign-up, password, sessions), keys, usage, billing (+ topups: card
payments, invoices), models (public pricing), status (the public status page), playground,
organisations, and the API page (base URL, endpoints, code samples). Every page reads through
`access.current_scope()`.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__)


def usd_input(micro: int | None) -> str:
    """µ$ as a plain decimal for an input's value ("5", "0.25"): exact, no trailing zeros."""
    if micro is None:
        return ""
    whole, frac = divmod(int(micro), 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


def register(app) -> None:
    from controlplane.console import access

    app.register_blueprint(bp)
    # Browsers ask for /favicon.ico whatever the page says; both consoles share the one icon.
    app.add_url_rule("/favicon.ico", "favicon", lambda: app.send_static_file("favicon.ico"))
    app.context_processor(access.template_helpers)
    app.add_template_filter(usd_input, "usd_input")


# Areas attach to the parent once, at import, so several apps (tests) can register the parent.
from controlplane.console import (  # noqa: E402,F401  (home: the parent's /)
    account, api_page, billing, home, keys, models, organisations, playground, status, topups, usage,
)

for _child in (account.bp, keys.bp, usage.bp, billing.bp, topups.bp, models.bp, playground.bp, organisations.bp, api_page.bp, status.bp):
    bp.register_blueprint(_child)
