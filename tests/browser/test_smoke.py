"""The browser can reach the console: an operator signs in, lands on the dashboard, adds a channel."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def test_operator_signs_in_and_adds_a_channel(page, live):
    sign_in(page, live)
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.get_by_role("link", name="Channels", exact=True).click()
    expect(page.get_by_text("No channels yet")).to_be_visible()  # waits for the page the click opens
    page.get_by_role("link", name="Add channel").first.click()
    page.get_by_label("Name", exact=True).fill("Fake OpenAI")
    page.get_by_label("Base URL").fill("http://127.0.0.1:9/v1")
    page.get_by_label("Models", exact=True).fill("gpt-4o-mini")
    page.get_by_label("Upstream keys").fill("sk-browser-test-1234")
    page.get_by_role("button", name="Save channel").click()
    page.get_by_role("heading", name="Fake OpenAI").wait_for()
    assert page.get_by_text("••••1234").is_visible()


def test_behaviours_without_inline_script_still_work(page, live):
    """The content policy forbids inline handlers: the bans filter submits itself from app.js, and
    the page fixture fails the test on any blocked script or style."""
    sign_in(page, live)
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.goto(live.url + "/admin/bans/")
    page.get_by_label("Kind").select_option(index=1)
    page.wait_for_url(lambda url: "filter_kind=" in url)
