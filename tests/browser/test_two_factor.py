"""Two-factor sign-in in a real browser: the operator's account page, setting it up from the QR
code page (the content policy lets the SVG show and blocks nothing), and signing in with a code."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from controlplane import totp
from tests.browser.conftest import shoot, sign_in

pytestmark = pytest.mark.browser


def test_an_operator_turns_on_two_factor_and_signs_in_with_a_code(page, live):
    sign_in(page, live)
    page.get_by_role("link", name="Your account").click()
    expect(page.get_by_role("heading", name="Your account", exact=True)).to_be_visible()
    expect(page.get_by_text("this browser")).to_be_visible()
    shoot(page, "admin-account")

    page.get_by_role("link", name="Set up two-factor sign-in").click()
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
    shoot(page, "admin-two-factor")
    secret = page.get_by_label("Setup key").input_value()
    page.get_by_label("Authentication code").fill(totp.code_at(secret, totp.current_step()))
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_text("this is the only time they are shown")).to_be_visible()
    assert len(page.get_by_label("Recovery codes").input_value().split()) == 10

    page.get_by_role("link", name="Done").click()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, live)
    expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()
    page.get_by_label("Authentication code").fill(totp.code_at(secret, totp.current_step() + 1))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
