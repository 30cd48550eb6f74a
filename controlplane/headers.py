"""Response headers that keep the consoles from being framed, sniffed or fed foreign script.

The content policy allows scripts, styles and connections from this origin only, no inline script
or style (behaviours are data- attributes read by static/app.js), and no framing. HSTS is sent when
the cookies are marked secure, which says the site is served over HTTPS.
"""
from __future__ import annotations

CONTENT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def policy_posting_to(*origins: str) -> str:
    """The content policy for a page whose form leads to another origin: Chromium holds a form's
    redirect to `form-action` too (the card top-up form is answered with a redirect to Stripe)."""
    return CONTENT_POLICY.replace("form-action 'self'", " ".join(["form-action 'self'", *origins]))


def init_app(app) -> None:
    fixed = {
        "Content-Security-Policy": CONTENT_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if app.config["SWITCHBOARD"].secure_cookies:
        fixed["Strict-Transport-Security"] = HSTS

    @app.after_request
    def security_headers(response):
        for name, value in fixed.items():
            response.headers.setdefault(name, value)
        return response
