"""Small helpers for test-client tests: CSRF tokens and signing in."""
from __future__ import annotations

import re

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(client, path: str) -> str:
    page = client.get(path)
    match = TOKEN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def login(client, email: str, password: str):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"csrf_token": token, "email": email, "password": password})


def post_form(client, path: str, data: dict, token_from: str | None = None):
    data = dict(data)
    data["csrf_token"] = csrf_token(client, token_from or path)
    return client.post(path, data=data)
