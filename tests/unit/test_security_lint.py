"""bandit, as `make lint` runs it (the project's configuration), refuses the calls that would run what
a user or operator wrote: eval, exec, pickle, yaml.load and a shell. No line of ours excuses them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("relay", "controlplane", "workers", "scripts", "wsgi.py")
DANGEROUS = """\
import os
import pickle
import subprocess

import yaml


def run(text, blob, command):
    eval(text)
    exec(text)
    pickle.loads(blob)
    yaml.load(text)
    subprocess.run(command, shell=True)
    os.system(command)
"""
# bandit's ids for the calls above: exec, pickle import, eval, pickle.loads, yaml.load, shell=True, os.system
NEVER = {"B102", "B403", "B307", "B301", "B506", "B602", "B605"}


def test_bandit_with_the_project_configuration_catches_code_run_from_data(tmp_path):
    sample = tmp_path / "dangerous.py"
    sample.write_text(DANGEROUS)
    found = subprocess.run([sys.executable, "-m", "bandit", "-c", str(ROOT / "pyproject.toml"), "-f", "json", "-q", str(sample)],
                           capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 1  # what fails `make lint`
    ids = {issue["test_id"] for issue in json.loads(found.stdout)["results"]}
    assert NEVER <= ids, NEVER - ids


def test_nothing_turns_those_checks_off():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["bandit"]
    assert not config.get("skips") and not config.get("tests"), "every plugin stays on"
    assert set(config["exclude_dirs"]) <= {"tests", "bench"}
    excused = []
    for source in SOURCES:
        for path in [ROOT / source] if source.endswith(".py") else (ROOT / source).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                marker = re.search(r"#\s*nosec\b(.*)$", line)
                if marker is None:
                    continue
                named = set(re.findall(r"B\d{3}", marker.group(1)))
                if not named or named & NEVER:  # a bare `# nosec` would silence every check on the line
                    excused.append(f"{path.relative_to(ROOT)}:{number}")
    assert excused == []
