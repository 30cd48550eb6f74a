"""Pages of query results: numbered pages for lists people browse, cursors for the request log
(a million rows: counting them or skipping to page 20,000 would be slow)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from controlplane.extensions import db

PER_PAGE = 50
MAX_PER_PAGE = 500
# Ids live in 64-bit signed columns; both SQL drivers raise (rather than match nothing) past that.
MAX_ID = 2**63 - 1
MAX_PAGE = MAX_ID // MAX_PER_PAGE  # so the row offset fits the same range


def row_id(text) -> int | None:
    """An id as written in a query string or form: ASCII digits within an id column's range, else
    None (str.isdigit also admits "²", which int() refuses)."""
    text = str(text or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def page_number(args) -> int:
    try:
        return min(max(int(args.get("page", 1) or 1), 1), MAX_PAGE)
    except (TypeError, ValueError):
        return 1


def per_page(args, default: int = PER_PAGE) -> int:
    try:
        return min(max(int(args.get("per_page", default) or default), 1), MAX_PER_PAGE)
    except (TypeError, ValueError):
        return default


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    def meta(self) -> dict:
        return {"page": self.page, "per_page": self.per_page, "total": self.total, "pages": self.pages}


def paginate(query, page: int = 1, size: int = PER_PAGE, scalars: bool = True) -> Page:
    """`query` is an ordered select; returns one page of it and the total count."""
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    bounded = query.limit(size).offset((page - 1) * size)
    items = list(db.session.scalars(bounded)) if scalars else list(db.session.execute(bounded))
    return Page(items=items, page=page, per_page=size, total=int(total or 0))


@dataclass
class CursorPage:
    """Newest first; `next_before` is the id to continue from (None at the end)."""

    items: list[Any]
    next_before: int | None
    before: int | None

    def meta(self) -> dict:
        return {"next_before": self.next_before}
