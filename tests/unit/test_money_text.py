"""The one rule for how money reads to people (`usd_text`, and static/money.js for the charts):
no non-zero amount reads as zero, the text is close to the amount, and bigger amounts never read
smaller. The exact amount is `micro_to_usd` (hover, CSV)."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from controlplane import csv_cells
from controlplane.filters import money
from relay.pricing import usd_text
from tests.gateway import ROOT

AMOUNTS = st.integers(min_value=-10**15, max_value=10**15)  # up to $1bn either way, in µ$


def read_back(text: str) -> Decimal:
    """The amount a person reads: "-$12,345.67" → Decimal("-12345.67") dollars."""
    negative = text.startswith("-")
    value = Decimal(text.lstrip("-").removeprefix("$").replace(",", ""))
    return -value if negative else value


@pytest.mark.parametrize("micro, shown", [
    (0, "$0.00"), (1, "$0.000001"), (105, "$0.000105"), (230, "$0.00023"), (1_000, "$0.001"), (1_234, "$0.00123"),
    (1_235, "$0.00124"), (9_994, "$0.00999"), (9_996, "$0.01"), (10_000, "$0.01"), (14_999, "$0.01"), (15_000, "$0.02"),
    (1_230_000, "$1.23"), (1_234_567, "$1.23"), (12_345_670_000, "$12,345.67"), (-105, "-$0.000105"), (-1_500_000, "-$1.50"),
])
def test_examples(micro, shown):
    assert usd_text(micro) == shown


@given(AMOUNTS)
def test_no_non_zero_amount_reads_as_zero(micro):
    assert (read_back(usd_text(micro)) == 0) == (micro == 0)
    assert usd_text(micro).startswith("-") == (micro < 0)


@given(AMOUNTS)
def test_what_is_read_is_close_to_the_amount(micro):
    exact = Decimal(micro) / 1_000_000
    error = abs(read_back(usd_text(micro)) - exact)
    if abs(micro) >= 10_000:
        assert error <= Decimal("0.005")  # cents, rounded half up
    else:
        assert error <= abs(exact) * Decimal("0.005")  # three significant digits


@given(AMOUNTS, AMOUNTS)
def test_a_bigger_amount_never_reads_smaller(a, b):
    low, high = sorted((a, b))
    assert read_back(usd_text(low)) <= read_back(usd_text(high))


def test_the_console_filter_shows_the_rule_and_the_exact_amount_on_hover():
    assert str(money(105)) == '<span class="money" title="$0.000105 (105 µ$)">$0.000105</span>'
    assert str(money(None)) == "—"


def test_csv_cells_are_exact():
    assert csv_cells.usd(105) == "0.000105" and csv_cells.usd(-1_500_000) == "-1.500000"
    assert csv_cells.flag(True) == "true" and csv_cells.flag(0) == "false"


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_charts_read_money_by_the_same_rule():
    draw = random.Random(17)
    amounts = [0, 1, 105, 9_994, 9_995, 9_996, 10_000, 14_999, 15_000, 1_234_567, -105, -15_000, 12_345_670_000]
    amounts += [draw.randint(-10**digits, 10**digits) for digits in range(1, 16) for _ in range(200)]
    script = ("const m = require(process.argv[1]); const xs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(xs.map(x => [m.text(x), m.exact(x)])));")
    out = subprocess.run(["node", "-e", script, str(ROOT / "controlplane" / "static" / "money.js")], input=json.dumps(amounts),
                         capture_output=True, text=True, check=True).stdout
    for micro, (text, exact) in zip(amounts, json.loads(out), strict=True):
        assert text == usd_text(micro), micro
        assert exact == money(micro).split('title="')[1].split('"')[0], micro
