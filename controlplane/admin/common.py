"""What every console area shares: who is acting, the confirmation step for destructive or
money-moving actions, and turning service refusals into 404s or field errors."""
from __future__ import annotations

from flask import abort, render_template, request
from flask_login import current_user

from controlplane.models import Role
from controlplane.services import NotFound, ServiceError
from controlplane.services.base import Actor


def actor() -> Actor:
    return Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr)


def is_admin() -> bool:
    return current_user.is_authenticated and current_user.role == Role.ADMIN.value


def can_write() -> bool:
    return current_user.is_authenticated and current_user.role in (Role.ADMIN.value, Role.OPERATOR.value)


def found(fn, *args):
    """Call a service lookup; a missing row is a 404 page."""
    try:
        return fn(*args)
    except NotFound:
        abort(404)


def confirmed() -> bool:
    return request.form.get("confirmed") == "yes"


def confirm(message: str, verb: str, cancel: str, danger: bool = True, details: list[tuple[str, str]] | None = None):
    """The confirmation page: states the effect, and re-posts the same fields with confirmed=yes."""
    fields = [(k, v) for k, v in request.form.items(multi=True) if k not in ("csrf_token", "confirmed", "submit")]
    return render_template("admin/confirm.html", message=message, verb=verb, cancel=cancel, danger=danger, fields=fields,
                           details=details or [], action=request.full_path if request.query_string else request.path)


def failed(form, error: ServiceError) -> int:
    """Show a service refusal next to its field (or above the form); returns the HTTP status."""
    from controlplane.admin.forms import attach_error

    attach_error(form, error)
    return error.status if error.status >= 400 else 400
