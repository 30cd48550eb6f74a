"""Operator console: upstream channels and their keys."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.forms import attach_error, lines, mapping
from controlplane.auth import require_roles
from controlplane.models import ChannelStatus
from controlplane.services import ServiceError, channels as channel_service
from controlplane.services.base import Actor
from relay.adapters import REGISTRY

bp = Blueprint("channels", __name__, url_prefix="/channels")


def actor() -> Actor:
    return Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr)


class ChannelForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired()])
    type = SelectField("Type", choices=[SelectChoice(t, a.info.label) for t, a in REGISTRY.items()])
    base_url = StringField("Base URL", validators=[DataRequired()], description="For example https://api.openai.com/v1")
    models = TextAreaField("Models", description="One per line")
    model_map = TextAreaField("Model mapping", description="public-name=upstream-name, one per line")
    groups = StringField("Groups", description="Comma-separated; empty means every group")
    priority = IntegerField("Priority", default=0, validators=[Optional()])
    weight = IntegerField("Weight", default=1, validators=[Optional()])
    tag = StringField("Tag")
    keys = TextAreaField("Upstream keys", description="One per line")
    submit = SubmitField("Save channel")


class KeysForm(FlaskForm):
    keys = TextAreaField("New keys", validators=[DataRequired()], description="One per line")
    submit = SubmitField("Add keys")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return render_template("admin/channels/list.html", channels=channel_service.all_channels())


@bp.route("/new", methods=["GET", "POST"])
@require_roles(*WRITERS)
def create():
    form = ChannelForm()
    if form.validate_on_submit():
        try:
            channel = channel_service.add_channel(
                actor(),
                name=form.name.data,
                type=form.type.data,
                base_url=form.base_url.data,
                keys=lines(form.keys.data.replace(",", "\n")) if form.keys.data else [],
                models=lines(form.models.data),
                model_map=mapping(form.model_map.data),
                groups=lines(form.groups.data),
                priority=form.priority.data or 0,
                weight=form.weight.data if form.weight.data is not None else 1,
                tag=form.tag.data,
            )
        except ServiceError as error:
            attach_error(form, error)
        else:
            flash(f"Channel {channel.name} created.")
            return redirect(url_for(".detail", channel_id=channel.id))
    return render_template("admin/channels/form.html", form=form, channel=None), 200 if request.method == "GET" or not form.errors else 400


@bp.get("/<int:channel_id>")
@require_roles(*OPERATORS)
def detail(channel_id: int):
    channel = _channel(channel_id)
    return render_template("admin/channels/detail.html", channel=channel, keys_form=KeysForm())


@bp.route("/<int:channel_id>/edit", methods=["GET", "POST"])
@require_roles(*WRITERS)
def edit(channel_id: int):
    channel = _channel(channel_id)
    form = ChannelForm(obj=None if request.method == "POST" else channel)
    del form.keys  # keys are added on the channel page; secrets are never shown back
    if request.method == "GET":
        form.models.data = "\n".join(channel.models or [])
        form.model_map.data = "\n".join(f"{k}={v}" for k, v in (channel.model_map or {}).items())
        form.groups.data = ", ".join(channel.groups or [])
    if form.validate_on_submit():
        try:
            channel_service.update_channel(
                actor(),
                channel,
                name=form.name.data,
                type=form.type.data,
                base_url=form.base_url.data,
                models=lines(form.models.data),
                model_map=mapping(form.model_map.data),
                groups=lines(form.groups.data),
                priority=form.priority.data or 0,
                weight=form.weight.data if form.weight.data is not None else 1,
                tag=form.tag.data,
            )
        except ServiceError as error:
            attach_error(form, error)
        else:
            flash("Channel saved.")
            return redirect(url_for(".detail", channel_id=channel.id))
    return render_template("admin/channels/form.html", form=form, channel=channel), 200 if request.method == "GET" or not form.errors else 400


@bp.post("/<int:channel_id>/keys")
@require_roles(*WRITERS)
def add_keys(channel_id: int):
    channel = _channel(channel_id)
    form = KeysForm()
    if form.validate_on_submit():
        try:
            added = channel_service.add_keys(actor(), channel, form.keys.data.splitlines())
        except ServiceError as error:
            flash(error.message, "error")
        else:
            flash(f"{len(added)} key(s) added.")
    return redirect(url_for(".detail", channel_id=channel.id))


@bp.post("/<int:channel_id>/status")
@require_roles(*WRITERS)
def set_status(channel_id: int):
    channel = _channel(channel_id)
    wanted = request.form.get("status")
    if wanted not in (ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value):
        abort(400)
    channel_service.set_status(actor(), channel, ChannelStatus(wanted), reason=request.form.get("reason") or None)
    flash(f"Channel {channel.name} {wanted}.")
    return redirect(url_for(".detail", channel_id=channel.id))


def _channel(channel_id: int):
    try:
        return channel_service.channel_by_id(channel_id)
    except ServiceError:
        abort(404)
