"""Two-factor sign-in pages for a person's own account, the same in both consoles.

`add_routes` puts them on a console's account blueprint with that console's access check and page
frame: the user console at /account/two-factor, the operator console at /admin/account/two-factor.
"""
from __future__ import annotations

import segno
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from controlplane import totp
from controlplane.services import ServiceError, two_factor
from controlplane.services.base import Actor


class CodeForm(FlaskForm):
    code = StringField("Authentication code", validators=[DataRequired(message="Enter the 6-digit code."), Length(max=totp.MAX_CODE_LENGTH)],
                       description="The 6-digit code your authenticator app shows now")
    submit = SubmitField("Turn on two-factor sign-in")


class DisableForm(FlaskForm):
    password = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    code = StringField("Authentication code", validators=[DataRequired(message="Enter a code."), Length(max=totp.MAX_CODE_LENGTH)],
                       description="From your authenticator, or one of your recovery codes")
    submit = SubmitField("Turn off two-factor sign-in")


def qr_data_uri(uri: str) -> str:
    """The otpauth:// URI as an SVG QR code in a data: URI (the content policy allows data: images)."""
    return segno.make(uri, error="m").svg_data_uri(scale=4, border=2)


def attach_error(form, error: ServiceError) -> None:
    # Imported here: the admin package imports this module.
    from controlplane.admin.forms import attach_error as attach

    attach(form, error)


def _actor() -> Actor:
    return Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr)


def add_routes(bp, guard, layout: str, account_endpoint: str, prefix: str = "") -> None:
    """Add the two-factor pages to `bp` under `prefix`, each wrapped in `guard`, rendered inside `layout`."""
    base = account_endpoint.rsplit(".", 1)[0]  # the blueprint's full name once nested ("console.account")

    def endpoint(name: str) -> str:
        return f"{base}.{name}"

    # Names the url_for calls in the shared templates need.
    names = {"start": endpoint("two_factor_start"), "page": endpoint("two_factor"), "confirm": endpoint("two_factor_confirm"),
             "disable": endpoint("two_factor_disable"), "account": account_endpoint}

    def page(code_form=None, disable_form=None, status=200):
        user = current_user._get_current_object()
        enrolment = two_factor.pending(user)
        return render_template("account/two_factor.html", layout=layout, names=names, enrolment=enrolment,
                               qr=qr_data_uri(enrolment.uri) if enrolment else None, left=two_factor.recovery_left(user),
                               code_form=code_form or CodeForm(formdata=None), disable_form=disable_form or DisableForm(formdata=None)), status

    @bp.get(prefix + "/two-factor", endpoint="two_factor")
    @guard
    def show():
        return page()

    @bp.post(prefix + "/two-factor/start", endpoint="two_factor_start")
    @guard
    def start():
        form = FlaskForm()
        if form.validate_on_submit():
            try:
                two_factor.start(_actor(), current_user._get_current_object())
            except ServiceError as error:
                flash(error.message, "error")
        return redirect(url_for(names["page"]))

    @bp.post(prefix + "/two-factor/confirm", endpoint="two_factor_confirm")
    @guard
    def confirm():
        form = CodeForm()
        if not form.validate_on_submit():
            return page(code_form=form, status=400)
        try:
            codes = two_factor.confirm(_actor(), current_user._get_current_object(), form.code.data)
        except ServiceError as error:
            attach_error(form, error)
            return page(code_form=form, status=400)
        # Rendered here, not after a redirect: the codes exist in this response only.
        return render_template("account/recovery_codes.html", layout=layout, names=names, codes=codes)

    @bp.post(prefix + "/two-factor/disable", endpoint="two_factor_disable")
    @guard
    def disable():
        form = DisableForm()
        if not form.validate_on_submit():
            return page(disable_form=form, status=400)
        try:
            two_factor.disable(_actor(), current_user._get_current_object(), form.password.data, form.code.data)
        except ServiceError as error:
            attach_error(form, error)
            return page(disable_form=form, status=400)
        flash("Two-factor sign-in is off. Your recovery codes no longer work.")
        return redirect(url_for(names["account"]))
