"""Operator console: a channel's upstream keys (add, enable, disable, delete) and its model list
(fetched from the upstream, then chosen by the operator). Routes on the channels blueprint."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from controlplane.admin import WRITERS
from controlplane.admin.channel_forms import KeysForm
from controlplane.admin.channels import bp
from controlplane.admin.common import actor, confirm, confirmed, found
from controlplane.auth import require_roles
from controlplane.models import ChannelStatus
from controlplane.services import ServiceError, channel_keys, channel_ops, channels as channel_service


@bp.post("/<int:channel_id>/keys")
@require_roles(*WRITERS)
def add_keys(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    form = KeysForm()
    if form.validate_on_submit():
        try:
            added = channel_service.add_keys(actor(), channel, form['keys'].data.splitlines())
        except ServiceError as error:
            flash(error.message, "error")
        else:
            flash(f"{len(added)} key(s) added: {', '.join(k.masked for k in added)}.")
    else:
        flash("Paste at least one key.", "error")
    return redirect(url_for(".detail", channel_id=channel.id) + "#keys")


@bp.post("/<int:channel_id>/keys/<int:key_id>/status")
@require_roles(*WRITERS)
def key_status(channel_id: int, key_id: int):
    key = found(channel_keys.key_of, channel_id, key_id)
    wanted = request.form.get("status")
    if wanted not in (ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value):
        abort(400)
    back = url_for(".detail", channel_id=channel_id) + "#keys"
    if wanted == "disabled" and not confirmed():
        return confirm(f"Disable key {key.masked} of {key.channel.name}? Requests stop using it until someone enables it.",
                       "Disable key", back)
    channel_keys.set_key_status(actor(), key, ChannelStatus(wanted), request.form.get("reason"))
    flash(f"Key {key.masked} {wanted}.")
    return redirect(back)


@bp.post("/<int:channel_id>/keys/<int:key_id>/delete")
@require_roles(*WRITERS)
def delete_key(channel_id: int, key_id: int):
    key = found(channel_keys.key_of, channel_id, key_id)
    back = url_for(".detail", channel_id=channel_id) + "#keys"
    if not confirmed():
        return confirm(f"Delete key {key.masked} from {key.channel.name}? The secret is erased and cannot be recovered.", "Delete key", back)
    masked = key.masked
    try:
        channel_keys.delete_key(actor(), key)
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"Key {masked} deleted.")
    return redirect(back)


@bp.post("/<int:channel_id>/models/fetch")
@require_roles(*WRITERS)
def fetch_models(channel_id: int):
    """Ask the upstream for its models and let the operator choose which this channel serves."""
    channel = found(channel_service.channel_by_id, channel_id)
    try:
        offered = channel_ops.fetch_models(channel)
    except ServiceError as error:
        flash(f"Could not fetch models: {error.message}", "error")
        return redirect(url_for(".detail", channel_id=channel.id))
    current = set(channel.models or [])
    choices = sorted(set(offered) | current)
    return render_template("admin/channels/models.html", channel=channel, choices=choices, offered=set(offered), current=current)


@bp.post("/<int:channel_id>/models")
@require_roles(*WRITERS)
def set_models(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    try:
        channel_ops.set_models(actor(), channel, request.form.getlist("model"))
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"{channel.name} now serves {len(channel.models)} model(s).")
    return redirect(url_for(".detail", channel_id=channel.id))
