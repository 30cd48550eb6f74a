"""The browser can reach the console: an operator signs in and lands on the channel list."""
from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def test_operator_signs_in_and_sees_the_channel_list(page, live):
    sign_in(page, live)
    page.get_by_role("heading", name="Channels").wait_for()
    assert page.get_by_text("No channels yet").is_visible()
    page.get_by_role("link", name="Add channel").first.click()
    page.get_by_label("Name").fill("Fake OpenAI")
    page.get_by_label("Base URL").fill("http://127.0.0.1:9/v1")
    page.get_by_label("Models").fill("gpt-4o-mini")
    page.get_by_label("Upstream keys").fill("sk-browser-test-1234")
    page.get_by_role("button", name="Save channel").click()
    page.get_by_role("heading", name="Fake OpenAI").wait_for()
    assert page.get_by_text("••••1234").is_visible()
