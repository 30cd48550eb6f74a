"""Form helpers shared by the console areas: text areas of lists and maps, error mapping."""
from __future__ import annotations

from controlplane.services import ServiceError


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


def attach_error(form, error: ServiceError) -> None:
    """Show a service refusal next to the field it names (or at the top of the form)."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = list(field.errors) + [error.message]
    else:
        form.form_errors.append(error.message)
