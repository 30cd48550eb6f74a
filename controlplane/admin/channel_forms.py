"""The channel form: every field of a channel, with a row editor for the model mapping."""
from __future__ import annotations

import json

from flask_wtf import FlaskForm
from wtforms import BooleanField, Form, FieldList, FormField, IntegerField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from controlplane.admin.forms import choices, json_object, lines, percent_bp
from relay.adapters import REGISTRY

BLANK_MAPPING_ROWS = 2


class MappingRow(Form):
    public = StringField("Public name", validators=[Optional(), Length(max=200)])
    upstream = StringField("Upstream name", validators=[Optional(), Length(max=200)])


def type_choices() -> list[tuple[str, str]]:
    return [(t, a.info.label) for t, a in REGISTRY.items()]


class ChannelForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(message="Give the channel a name."), Length(max=100)])
    type = SelectField("Type", choices=lambda: choices(type_choices()))
    base_url = StringField("Base URL", validators=[DataRequired(message="Enter the upstream's base URL.")],
                           description="With its scheme, e.g. https://api.openai.com/v1")
    models = TextAreaField("Models", description="One per line: the names callers use")
    model_map = FieldList(FormField(MappingRow), label="Model mapping", min_entries=1)
    groups = StringField("Groups", description="Comma-separated; empty means every group")
    priority = IntegerField("Priority", default=0, validators=[Optional()], description="Higher is tried first")
    weight = IntegerField("Weight", default=1, validators=[Optional()], description="Share of traffic within a priority")
    tag = StringField("Tag", validators=[Length(max=64)], description="Group channels for bulk enable/disable")
    public = BooleanField("Callers may name it", description="In a request's provider preferences (order, only, ignore), by its name or tag")
    cost = StringField("Upstream cost (% of list price)", description="What the upstream charges you; empty if unknown (no margin shown)")
    config = TextAreaField("Settings (JSON)",
                           description='Type-specific, e.g. {"timeouts": {"first_byte": 60}}; Azure {"api_version": "2024-06-01"}. Unknown keys are refused.')
    keys = TextAreaField("Upstream keys", description="One per line; stored encrypted, shown as the last 4 characters")
    submit = SubmitField("Save channel")

    def fill_from(self, channel) -> None:
        """Show a channel's values (never its keys)."""
        self.name.data, self.type.data, self.base_url.data = channel.name, channel.type, channel.base_url
        self.models.data = "\n".join(channel.models or [])
        self.groups.data = ", ".join(channel.groups or [])
        self.priority.data, self.weight.data, self.tag.data = channel.priority, channel.weight, channel.tag or ""
        self.cost.data = "" if channel.cost_bp is None else f"{channel.cost_bp / 100:g}"
        config = {k: v for k, v in (channel.config or {}).items() if k != "public"}  # the checkbox edits that one
        self.public.data = bool((channel.config or {}).get("public"))
        self.config.data = json.dumps(config, indent=2) if config else ""
        while len(self.model_map.entries):
            self.model_map.pop_entry()
        for public, upstream in (channel.model_map or {}).items():
            self.model_map.append_entry({"public": public, "upstream": upstream})
        self.pad_mapping()

    def pad_mapping(self) -> None:
        blanks = sum(1 for e in self.model_map.entries if not (e.public.data or e.upstream.data))
        for _ in range(max(BLANK_MAPPING_ROWS - blanks, 0)):
            self.model_map.append_entry()

    def mapping(self) -> dict[str, str]:
        from controlplane.services import ServiceError

        result = {}
        for entry in self.model_map.entries:
            public, upstream = (entry.public.data or "").strip(), (entry.upstream.data or "").strip()
            if public and upstream:
                result[public] = upstream
            elif public or upstream:
                raise ServiceError("Fill in both names of a mapping row (or clear both).", "model_map")
        return result

    def values(self) -> dict:
        """The service's keyword arguments (ServiceError for what only parsing can catch)."""
        return dict(
            name=self.name.data, type=self.type.data, base_url=self.base_url.data, models=lines(self.models.data),
            model_map=self.mapping(), groups=lines(self.groups.data), priority=self.priority.data or 0,
            weight=self.weight.data if self.weight.data is not None else 1, tag=self.tag.data,
            cost_bp=percent_bp(self.cost.data, "cost"), config=self.settings(),
        )

    def settings(self) -> dict:
        config = json_object(self.config.data, "config")
        config.pop("public", None)
        return {**config, "public": True} if self.public.data else config


class KeysForm(FlaskForm):
    keys = TextAreaField("New keys", validators=[DataRequired(message="Paste at least one key.")],
                         description="One per line: add one, or paste many")
    submit = SubmitField("Add keys")
