"""The console's forms (Flask-WTF: CSRF on each). Amounts are dollars as typed; services parse
them exactly. No form has a field for role, group, balance or status: those are the operator's."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateTimeLocalField, EmailField, HiddenField, PasswordField, SelectField, SelectMultipleField,
                     StringField, SubmitField, TextAreaField)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget


class SignupForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)], description="At least 8 characters")
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "The passwords differ.")])
    invite = HiddenField()
    submit = SubmitField("Create account")


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=200)], description="At least 8 characters")
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), EqualTo("new_password", "The passwords differ.")])
    submit = SubmitField("Change password")


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()], description="Your current password, to confirm")
    submit = SubmitField("Save email")


ROLES = [SelectChoice("member", "Member"), SelectChoice("admin", "Admin"), SelectChoice("owner", "Owner")]


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class KeyForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=100)], description="So you can tell your keys apart, e.g. “laptop”")
    credit_limit = StringField("Credit limit (USD)", validators=[Optional()], description="Lifetime spend cap for this key; empty: none")
    daily_budget = StringField("Daily budget (USD)", validators=[Optional()], description="Resets at 00:00 UTC; empty: none")
    monthly_budget = StringField("Monthly budget (USD)", validators=[Optional()], description="Resets on the 1st (UTC); empty: none")
    models = MultiCheckboxField("Models", choices=[], validate_choice=False,
                                description="Tick none to allow every model your group may use")
    expires_at = DateTimeLocalField("Expires (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: never")
    ip_allow = TextAreaField("Allowed IP addresses", description="Addresses or CIDR ranges, one per line; empty: any")
    submit = SubmitField("Create key")


class RedeemForm(FlaskForm):
    code = StringField("Redemption code", validators=[DataRequired(), Length(max=64)], description="Like ABCDE-FGHJK-LMNPQ-RSTUV")
    submit = SubmitField("Redeem")


class AlertForm(FlaskForm):
    threshold = StringField("Alert when the balance falls below (USD)", validators=[Optional()], description="Empty: no alert")
    email = BooleanField("Email me", default=True)
    webhook_url = StringField("Webhook URL", validators=[Optional(), Length(max=500)], description="We POST a signed JSON event")
    submit = SubmitField("Save alert")


class OrganisationForm(FlaskForm):
    name = StringField("Organisation name", validators=[DataRequired(), Length(max=100)])
    submit = SubmitField("Create organisation")


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[Optional(), Length(max=254)], description="Empty: make a link to share yourself")
    role = SelectField("Role", choices=ROLES, default="member")
    submit = SubmitField("Invite")


class AllowanceForm(FlaskForm):
    allowance = StringField("Monthly allowance (USD)", validators=[Optional()])
    submit = SubmitField("Set allowance")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLES)
    submit = SubmitField("Change role")


class CloseAccountForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired(message="Enter your password to confirm it is you."), Length(max=200)])
    code = StringField("Two-factor code", validators=[Optional(), Length(max=64)], description="From your authenticator app, or a recovery code")
    submit = SubmitField("Close my account")
