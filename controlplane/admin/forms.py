"""Form helpers shared by the console areas: text areas of lists and maps, numbers people type
as percentages or dates, error mapping."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from wtforms.fields.choices import SelectChoice

from controlplane.services import ServiceError


def choices(pairs) -> list[SelectChoice]:
    """(value, label) pairs as select options."""
    return [SelectChoice(value, label) for value, label in pairs]


def lines(text: str | None) -> list[str]:
    """One item per line (commas also split), blanks dropped."""
    out = []
    for line in (text or "").replace(",", "\n").splitlines():
        line = line.strip()
        if line:
            out.append(line)
    return out


def mapping(text: str | None, field: str = "model_map") -> dict[str, str]:
    """`public=upstream` per line."""
    result = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        left, sep, right = line.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ServiceError(f"Write each mapping as public-name=upstream-name (got '{line}').", field)
        result[left.strip()] = right.strip()
    return result


def percent_bp(text: str | None, field: str) -> int | None:
    """"62.5" (percent) → 6250 basis points; empty → None."""
    text = (text or "").strip().rstrip("%").strip()
    if not text:
        return None
    try:
        bp = Decimal(text) * 100
    except InvalidOperation:
        raise ServiceError("Enter a percentage like 60 or 62.5.", field) from None
    if not bp.is_finite() or bp != bp.to_integral_value():
        raise ServiceError("Use at most two decimals.", field)
    if bp < 0:
        raise ServiceError("A percentage cannot be negative.", field)
    return int(bp)


def json_object(text: str | None, field: str) -> dict:
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ServiceError(f"This is not valid JSON ({error.msg} at line {error.lineno}).", field) from None
    if not isinstance(value, dict):
        raise ServiceError('Write a JSON object, like {"api_version": "2024-06-01"}.', field)
    return value


def utc(value: datetime | None) -> datetime | None:
    """A naive datetime from a datetime-local input, read as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def scoped(form, prefix: str):
    """Give a form's fields ids of their own when several forms share a page (labels point at ids)."""
    for field in form:
        field.id = field.label.field_id = f"{prefix}-{field.name}"
    return form


def attach_error(form, error: ServiceError) -> None:
    """Show a service refusal next to the field it names (or at the top of the form)."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None and hasattr(field, "errors"):
        field.errors = list(field.errors) + [error.message]
    else:
        form.form_errors.append(error.message)
