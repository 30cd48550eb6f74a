"""Operator console: upstream channels — the filtered list, create and edit, state, deletion,
bulk enable/disable by tag. Keys and model lists are in channel_keys.py."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import case, func, select

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.channel_forms import ChannelForm, KeysForm, type_choices
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelKey, ChannelStatus
from controlplane.queries.channels import FILTERS, STATES, filtered
from controlplane.queries.pagination import page_number, paginate
from controlplane.redirects import safe_next
from controlplane.services import ServiceError, channel_ops, channels as channel_service

bp = Blueprint("channels", __name__, url_prefix="/channels")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    page = paginate(filtered(request.args), page_number(request.args))
    ids = [c.id for c in page.items]
    key_counts = {cid: (total, enabled or 0) for cid, total, enabled in db.session.execute(
        select(ChannelKey.channel_id, func.count(), func.sum(case((ChannelKey.status == "enabled", 1), else_=0)))
        .where(ChannelKey.channel_id.in_(ids)).group_by(ChannelKey.channel_id))} if ids else {}
    latest = select(func.max(ChannelEvent.id)).where(ChannelEvent.channel_id.in_(ids), ChannelEvent.channel_key_id.is_(None)).group_by(ChannelEvent.channel_id)
    changed_by = dict(db.session.execute(select(ChannelEvent.channel_id, ChannelEvent.actor).where(ChannelEvent.id.in_(latest))).all()) if ids else {}
    tags = list(db.session.scalars(select(Channel.tag).where(Channel.tag.is_not(None)).distinct().order_by(Channel.tag)))
    is_filtered = any(request.args.get(k) for k in FILTERS)
    return render_template("admin/channels/list.html", page=page, key_counts=key_counts, changed_by=changed_by, tags=tags, types=type_choices(),
                           states=STATES, args=request.args, filtered=is_filtered)


@bp.route("/new", methods=["GET", "POST"])
@require_roles(*WRITERS)
def create():
    form = ChannelForm()
    status = 200
    if form.validate_on_submit():
        try:
            values = form.values()
            keys = [k for k in (form['keys'].data or "").splitlines() if k.strip()]
            channel = channel_service.add_channel(actor(), keys=keys, **values)
        except ServiceError as error:
            status = failed(form, error)
        else:
            flash(f"Channel {channel.name} created with {len(channel.keys)} key(s).")
            return redirect(url_for(".detail", channel_id=channel.id))
    elif request.method == "POST":
        status = 400
    form.pad_mapping()
    return render_template("admin/channels/form.html", form=form, channel=None), status


@bp.get("/<int:channel_id>")
@require_roles(*OPERATORS)
def detail(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    events = paginate(select(ChannelEvent).where(ChannelEvent.channel_id == channel.id).order_by(ChannelEvent.id.desc()),
                      page_number(request.args), 20)
    last_by = db.session.scalar(select(ChannelEvent.actor).where(ChannelEvent.channel_id == channel.id, ChannelEvent.channel_key_id.is_(None))
                                .order_by(ChannelEvent.id.desc()).limit(1))
    keys = paginate(select(ChannelKey).where(ChannelKey.channel_id == channel.id).order_by(ChannelKey.id),
                    page_number({"page": request.args.get("keys_page")}), 50)
    key_names = dict(db.session.execute(select(ChannelKey.id, ChannelKey.last4).where(ChannelKey.channel_id == channel.id)).all())
    key_names = {kid: "••••" + last4 for kid, last4 in key_names.items()}
    return render_template("admin/channels/detail.html", channel=channel, keys_form=KeysForm(), events=events, keys=keys,
                           last_by=last_by if channel.status != "enabled" else None, key_names=key_names)


@bp.route("/<int:channel_id>/edit", methods=["GET", "POST"])
@require_roles(*WRITERS)
def edit(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    form = ChannelForm()
    del form["keys"]  # keys are added on the channel page; secrets are never shown back
    status = 200
    if request.method == "GET":
        form.fill_from(channel)
    elif form.validate_on_submit():
        try:
            channel_service.update_channel(actor(), channel, **form.values())
        except ServiceError as error:
            db.session.rollback()
            status = failed(form, error)
        else:
            flash("Channel saved.")
            return redirect(url_for(".detail", channel_id=channel.id))
    else:
        status = 400
    if request.method == "POST":
        form.pad_mapping()
    return render_template("admin/channels/form.html", form=form, channel=channel), status


@bp.post("/<int:channel_id>/status")
@require_roles(*WRITERS)
def set_status(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    wanted = request.form.get("status")
    if wanted not in (ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value):
        abort(400)
    back = url_for(".detail", channel_id=channel.id)
    if wanted == "disabled" and not confirmed():
        return confirm(f"Disable {channel.name}? It stops taking traffic at once and stays disabled until someone enables it.",
                       "Disable channel", back)
    channel_service.set_status(actor(), channel, ChannelStatus(wanted), reason=(request.form.get("reason") or "").strip() or None)
    flash(f"Channel {channel.name} {wanted}.")
    return redirect(safe_next(request.form.get("next"), prefix="/admin/") or back)


@bp.post("/<int:channel_id>/delete")
@require_roles(*WRITERS)
def delete(channel_id: int):
    channel = found(channel_service.channel_by_id, channel_id)
    if not confirmed():
        return confirm(f"Delete {channel.name} and its {len(channel.keys)} key(s)? This cannot be undone; request logs keep its id.",
                       "Delete channel", url_for(".detail", channel_id=channel.id))
    name = channel.name
    channel_service.delete_channel(actor(), channel)
    flash(f"Channel {name} deleted.")
    return redirect(url_for(".index"))


@bp.post("/bulk-status")
@require_roles(*WRITERS)
def bulk_status():
    tag, wanted = (request.form.get("tag") or "").strip(), request.form.get("status")
    if wanted not in (ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value):
        abort(400)
    count = db.session.scalar(select(func.count()).select_from(Channel).where(Channel.tag == tag)) if tag else 0
    if not count:
        flash("Choose a tag that channels carry.", "error")
        return redirect(url_for(".index"))
    if not confirmed():
        verb = "Disable" if wanted == "disabled" else "Enable"
        return confirm(f"{verb} all {count} channel(s) tagged {tag}?", f"{verb} {count} channel(s)", url_for(".index", tag=tag),
                       danger=wanted == "disabled")
    try:
        changed = channel_ops.set_status_by_tag(actor(), tag, ChannelStatus(wanted), request.form.get("reason"))
    except ServiceError as error:
        flash(error.message, "error")
    else:
        flash(f"{len(changed)} channel(s) tagged {tag} {wanted}.")
    return redirect(url_for(".index", tag=tag))
