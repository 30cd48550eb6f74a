"""Operator console: user groups — price multiplier, model access, rate limits, the capacity queue, the default."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, IntegerField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, failed, found
from controlplane.admin.forms import lines
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import Group
from controlplane.queries.pagination import page_number, paginate
from controlplane.services import ServiceError, groups as group_service

bp = Blueprint("groups", __name__, url_prefix="/groups")
POSITIVE = NumberRange(min=1, message="Enter a whole number of at least 1, or leave empty for no limit.")


class GroupForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(message="Name the group."), Length(max=64)],
                       description="Letters, digits, '.', '_' or '-'; cannot change later")
    multiplier = StringField("Price multiplier", default="1.0", validators=[DataRequired(message="Enter a multiplier, e.g. 1.0.")],
                             description="1.0 is list price; 0.9 is 10% off")
    model_patterns = TextAreaField("Model access", description="One pattern per line (gpt-4o*, claude-*); empty allows every model")
    rpm = IntegerField("Requests per minute", validators=[Optional(), POSITIVE], description="Empty: no limit")
    tpm = IntegerField("Tokens per minute", validators=[Optional(), POSITIVE], description="Empty: no limit")
    concurrency = IntegerField("Concurrent requests", validators=[Optional(), POSITIVE], description="Empty: no limit")
    queue_seconds = IntegerField("Capacity queue (seconds)", default=10,
                                 validators=[Optional(), NumberRange(min=0, max=300, message="Enter 0 to 300 seconds.")],
                                 description="How long a request waits when every channel of its model is full; 0 answers 429 at once")
    priority = IntegerField("Queue priority", default=0, validators=[Optional(), NumberRange(min=0, max=1000, message="Enter 0 to 1000.")],
                            description="Higher groups are served first while requests wait for capacity")
    is_default = BooleanField("Default group for new users")
    submit = SubmitField("Save group")


def _values(form) -> dict:
    return dict(multiplier=form.multiplier.data, model_patterns=lines(form.model_patterns.data), rpm=form.rpm.data, tpm=form.tpm.data,
                concurrency=form.concurrency.data, queue_seconds=form.queue_seconds.data, priority=form.priority.data)


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    page = paginate(select(Group).order_by(Group.name), page_number(request.args))
    return render_template("admin/groups/list.html", page=page, members=group_service.member_counts())


@bp.route("/new", methods=["GET", "POST"])
@require_roles(*WRITERS)
def create():
    form = GroupForm()
    status = 200
    if form.validate_on_submit():
        try:
            group = group_service.create_group(actor(), form.name.data, is_default=form.is_default.data, **_values(form))
        except ServiceError as error:
            db.session.rollback()
            status = failed(form, error)
        else:
            flash(f"Group {group.name} created.")
            return redirect(url_for(".index"))
    elif request.method == "POST":
        status = 400
    return render_template("admin/groups/form.html", form=form, group=None), status


@bp.get("/<int:group_id>")
@require_roles(*OPERATORS)
def edit(group_id: int):
    group = found(group_service.group_by_id, group_id)
    form = GroupForm(formdata=None, obj=group, multiplier=f"{group.multiplier_bp / 10_000:g}", model_patterns="\n".join(group.model_patterns or []))
    return render_template("admin/groups/form.html", form=form, group=group, members=group_service.member_counts().get(group.id, 0))


@bp.post("/<int:group_id>")
@require_roles(*WRITERS)
def update(group_id: int):
    group = found(group_service.group_by_id, group_id)
    form = GroupForm()
    form.name.data = group.name  # the name is fixed; keys and channels refer to it
    if not form.validate_on_submit():
        return render_template("admin/groups/form.html", form=form, group=group), 400
    try:
        group_service.update_group(actor(), group, is_default=form.is_default.data or None, **_values(form))
    except ServiceError as error:
        db.session.rollback()
        return render_template("admin/groups/form.html", form=form, group=group), failed(form, error)
    flash(f"Group {group.name} saved.")
    return redirect(url_for(".index"))


@bp.post("/<int:group_id>/delete")
@require_roles(*WRITERS)
def delete(group_id: int):
    group = found(group_service.group_by_id, group_id)
    if not confirmed():
        return confirm(f"Delete the group {group.name}? Channels that list it keep the name but nobody can be in it.",
                       "Delete group", url_for(".edit", group_id=group.id))
    try:
        group_service.delete_group(actor(), group)
    except ServiceError as error:
        flash(error.message, "error")
        return redirect(url_for(".edit", group_id=group_id))
    flash(f"Group {group.name} deleted.")
    return redirect(url_for(".index"))
