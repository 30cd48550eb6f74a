"""Where a `next` parameter may send a browser: same-origin absolute paths only.

Browsers are lenient about what follows a redirect: they drop tabs and newlines, read `\\` as `/`,
and treat `//host` as another origin. So a target is refused, not cleaned, when it carries any of
them; a refused target falls back to the page's default.
"""
from __future__ import annotations

from urllib.parse import urlsplit

MAX_LENGTH = 2048


def safe_next(target: str | None, prefix: str = "/") -> str | None:
    """`target` when it is a path on this site under `prefix`, else None."""
    if not target or len(target) > MAX_LENGTH or not target.startswith(prefix) or not prefix.startswith("/"):
        return None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target) or "\\" in target:
        return None
    if target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
