"""Every control-plane response carries the content policy and anti-framing headers; HSTS when the
cookies are secure; and no template carries inline script the policy would block."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("path", ["/login", "/admin/api/openapi.json", "/healthz", "/no-such-page", "/static/app.js"])
def test_responses_carry_the_security_headers(client, path):
    response = client.get(path)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP: no HSTS promise


def test_hsts_when_cookies_are_secure(app):
    from controlplane.app import create_app

    secure = create_app(replace(app.config["SWITCHBOARD"], secure_cookies=True))
    response = secure.test_client().get("/login")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE), "inline <script>"),
    (re.compile(r"\son[a-z]+\s*=", re.IGNORECASE), "inline event handler"),
    (re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE), "javascript: URL"),
    (re.compile(r"\sstyle\s*=", re.IGNORECASE), "inline style attribute"),
    (re.compile(r"<style", re.IGNORECASE), "inline <style>"),
]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT / "templates")))
def test_templates_have_nothing_the_content_policy_blocks(template):
    text = template.read_text()
    found = [what for pattern, what in INLINE if pattern.search(text)]
    assert found == []
