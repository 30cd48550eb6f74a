"""An invoice as a PDF (fpdf2, pure Python): one A4 page with the same facts as the HTML page.

The PDF's built-in fonts cover Latin-1; a character outside it (a name in another script) prints
as "?" here, while the HTML page shows it as typed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from controlplane.models import Invoice
from relay.pricing import micro_to_usd, usd_text

if TYPE_CHECKING:
    from fpdf import FPDF


def _latin1(text: str) -> str:
    return (text or "").encode("latin-1", "replace").decode("latin-1")


def _party(pdf: FPDF, title: str, party: dict, x: float, y: float, width: float) -> None:
    pdf.set_xy(x, y)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(width, 6, title, new_x="LEFT", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    lines = [party.get("name") or "", *(party.get("address") or "").splitlines()]
    if party.get("tax_id"):
        lines.append(f"Tax id: {party['tax_id']}")
    if party.get("email"):
        lines.append(party["email"])
    for line in lines:
        if line.strip():
            pdf.set_x(x)
            pdf.multi_cell(width, 5, _latin1(line), new_x="LEFT", new_y="NEXT")


def render(invoice: Invoice, compress: bool = True) -> bytes:
    """The PDF's bytes (`compress=False` leaves the page text readable, for tests)."""
    from fpdf import FPDF  # here, not at import: every CLI call and web process would load it for nothing

    pdf = FPDF(format="A4")
    pdf.set_compression(compress)
    pdf.set_title(f"Invoice {invoice.code}")
    pdf.set_creator("Switchboard")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(f"Invoice {invoice.code}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(0, 6, f"Issued {invoice.issued_at:%Y-%m-%d %H:%M} UTC - paid", new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 6
    _party(pdf, "From", invoice.seller or {}, pdf.l_margin, top, 85)
    left_end = pdf.get_y()
    _party(pdf, "Bill to", invoice.buyer or {}, pdf.l_margin + 95, top, 85)
    pdf.set_y(max(left_end, pdf.get_y()) + 10)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(130, 8, "Description", border="B")
    pdf.cell(0, 8, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(130, 8, "Prepaid credit for the Switchboard API gateway")
    pdf.cell(0, 8, _latin1(usd_text(invoice.amount)), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(130, 8, "Total paid", border="T")
    pdf.cell(0, 8, _latin1(f"{usd_text(invoice.amount)} {invoice.currency.upper()}"), border="T", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 9)
    facts = [
        ("Exact amount", micro_to_usd(invoice.amount)),
        ("Payment method", f"{invoice.payment_method} (Stripe)"),
        ("Stripe payment", invoice.payment_intent_id or "-"),
        ("Stripe Checkout session", invoice.checkout_session_id or "-"),
    ]
    for label, value in facts:
        pdf.cell(45, 5, label)
        pdf.multi_cell(0, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
