"""Browser tests: Playwright driving Debian's Chromium against a real `switchboard up`.

Tests find things by label and role (ui.md), never by id. `shoot(page, area)` saves the
screenshot of an area into docs/screenshots/ at 1280×800.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.gateway import ROOT, Gateway
from tests.services import REQUIRE

CHROMIUM = os.environ.get("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        message = f"Chromium is not installed at {CHROMIUM}"
        pytest.fail(message) if REQUIRE else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    # Anything the content policy blocked (inline script or style, a foreign origin) fails the test.
    blocked: list[str] = []
    opened.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    yield opened
    context.close()
    assert blocked == [], blocked


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A running gateway for a module of browser tests."""
    gateway = Gateway(tmp_path_factory.mktemp("browser-gateway"))
    yield gateway
    gateway.stop()


def shoot(page, area: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{area}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def sign_in(page, gateway: Gateway, email: str | None = None, password: str | None = None) -> None:
    if email is None:
        email, password = gateway.operator
    page.goto(gateway.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
