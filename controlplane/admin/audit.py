"""Operator console: the audit log — every operator action, who, what, before and after, when."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from sqlalchemy import select

from controlplane.admin import OPERATORS
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import AuditEntry
from controlplane.queries.audit import FILTERS, changes, filtered
from controlplane.queries.pagination import page_number, paginate

bp = Blueprint("audit", __name__, url_prefix="/audit")


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    page = paginate(filtered(request.args), page_number(request.args))
    types = list(db.session.scalars(select(AuditEntry.target_type).distinct().order_by(AuditEntry.target_type)))
    is_filtered = any(request.args.get(k) for k in FILTERS)
    return render_template("admin/audit/list.html", page=page, args=request.args, types=types, changes=changes, filtered=is_filtered)
