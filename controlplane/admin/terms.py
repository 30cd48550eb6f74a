"""Operator console: versions of the terms of service — which is in force, how many people accepted
each, and announcing a new one (at least 14 days ahead; customers are emailed and see it on their
dashboard)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, failed
from controlplane.admin.forms import utc
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import utcnow
from controlplane.models.lifecycle import TERMS_SUMMARY_MAX, TERMS_URL_MAX, TERMS_VERSION_MAX
from controlplane.services import ServiceError, terms

bp = Blueprint("terms", __name__, url_prefix="/terms")


class TermsForm(FlaskForm):
    version = StringField("Version", validators=[DataRequired(message="Name the version, e.g. 2026-12."), Length(max=TERMS_VERSION_MAX)])
    summary = TextAreaField("What changed", validators=[DataRequired(message="Say what changed: customers read it in the notice."),
                                                         Length(max=TERMS_SUMMARY_MAX)])
    url = StringField("Address of the terms", validators=[Optional(), Length(max=TERMS_URL_MAX)], description="https://…")
    effective_at = DateTimeLocalField("Takes effect (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()],
                                      description="At least 14 days from now; the first version may take effect at once (leave empty)")
    submit = SubmitField("Announce version")


def _render(form=None, status: int = 200):
    return render_template("admin/terms/index.html", versions=terms.versions(), counts=terms.acceptance_counts(), current=terms.in_force(),
                           form=form or TermsForm(formdata=None), now=utcnow()), status


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    return _render()


@bp.post("/")
@require_roles(*WRITERS)
def publish():
    form = TermsForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    try:
        row = terms.publish(actor(), form.version.data, form.summary.data, form.url.data, utc(form.effective_at.data))
    except ServiceError as error:
        db.session.rollback()
        return _render(form, failed(form, error))
    flash(f"Terms version {row.version} announced for {row.effective_at:%Y-%m-%d %H:%M} UTC.")
    return redirect(url_for(".index"))
