"""The benchmark harness runs end to end (for one second per run) and reports every column.

Not a performance test: it asserts the harness works and what it measures is present, never a speed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.gateway import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_bench_harness_runs_and_reports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.run", "--seconds", "1", "--concurrency", "1,4", "--hold-streams", "20", "--hold-gap-ms", "100",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| non-stream | 4 |" in out.stdout and "| stream | 4 |" in out.stdout
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    relay = report["rows"][0]["relay"]
    assert relay["requests"] > 0 and relay["errors"] == 0
    assert relay["redis_rt_per_req"] > 0 and relay["cpu_us_per_req"] > 0
    # the whole system by component: the usage consumer and Redis did work for these requests too
    assert relay["ingest_cpu_us_per_req"] > 0 and relay["redis_cpu_us_per_req"] > 0
    assert relay["system_cpu_us_per_req"] >= relay["cpu_us_per_req"]
    assert "| whole system µs/req |" in out.stdout
    assert report["held_streams"]["completed"] == 20
    assert report["sql_driver_loaded"] is False


def test_the_affinity_bench_runs_and_reports_both_ways():
    out = subprocess.run([sys.executable, "-m", "bench.affinity", "--conversations", "1", "--turns", "4"], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| on |") or line.startswith("| off |")]
    assert len(rows) == 8
    on_strict = next(r for r in rows if r.startswith("| on | strict | random |"))
    assert on_strict.split("|")[5].strip() == "1.0"  # with affinity the conversation kept one key
