"""`switchboard invite`: a sign-up link for someone, for when sign-up is invite-only."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from controlplane.cli.group import emit, json_option
from controlplane.services import organisations
from controlplane.services.base import Actor


@click.command("invite")
@click.option("--email", default=None, help="Only this address may use it; default: whoever has the link.")
@json_option
@with_appcontext
def invite(email, as_json):
    """Print a single-use sign-up link (valid 7 days)."""
    row, token = organisations.platform_invite(Actor.cli(), email)
    link = f"{current_app.config['SWITCHBOARD'].public_url.rstrip('/')}/signup?invite={token}"
    emit(as_json, {"id": row.id, "email": row.email, "link": link, "expires_at": row.expires_at.isoformat()}, link)
