"""Errors the service layer raises for the caller to show: import-light (the CLI catches them)."""
from __future__ import annotations


class ServiceError(Exception):
    """A write refused for a reason the caller can fix; `field` names the input at fault."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class NotFound(ServiceError):
    def __init__(self, what: str):
        super().__init__(f"{what} not found", status=404)
