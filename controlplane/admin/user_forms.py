"""Forms of the users area: create, top up, adjust, ban, group and role changes."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin.forms import choices
from controlplane.models import Role

REASON = "Say why (the user sees this reason)."


class CreateUserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(message="Enter an email address."), Length(max=254)])
    password = PasswordField("Password", validators=[Optional(), Length(max=200)], description="Optional: without one, the user cannot sign in yet")
    group = SelectField("Group", choices=[])
    submit = SubmitField("Create user")


class TopupForm(FlaskForm):
    amount = StringField("Amount (USD)", validators=[DataRequired(message="Enter an amount, like 20 or 12.50.")])
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)], description="E.g. the payment reference")
    submit = SubmitField("Top up")


class AdjustForm(FlaskForm):
    amount = StringField("Adjustment (USD)", validators=[DataRequired(message="Enter an amount; negative takes money away.")],
                         description="Negative to take money away, e.g. -1.50")
    reason = StringField("Reason", validators=[DataRequired(message=REASON), Length(max=500)])
    submit = SubmitField("Adjust balance")


class BanForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="Give a reason for the ban."), Length(max=500)])
    expires_at = DateTimeLocalField("Until (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()], description="Empty: until lifted")
    submit = SubmitField("Ban user")


class GroupChangeForm(FlaskForm):
    group = SelectField("Group", choices=[])
    submit = SubmitField("Change group")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=choices((r.value, r.value) for r in Role))
    submit = SubmitField("Change role")


class NewKeyForm(FlaskForm):
    name = StringField("Key name", validators=[Optional(), Length(max=100)], description="E.g. the customer's app or server")
    credit_limit = StringField("Credit limit (USD)", validators=[Optional()], description="Empty: the whole balance")
    models = StringField("Models", validators=[Optional(), Length(max=2000)], description="Comma-separated; empty: all the group may use")
    submit = SubmitField("Create key")


class CloseAccountForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired(message="Say why the account is closed."), Length(max=500)],
                         description="E.g. the customer's request by email")
    submit = SubmitField("Close account")
