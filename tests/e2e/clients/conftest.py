"""One `switchboard up` for the real-client tests, with a fake upstream of each channel type and
public model names that say which channel serves them. Each test funds a customer of its own and
checks that customer's balance to the micro-dollar."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.api.batch import cli_all
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway import Gateway

# One public model per channel type, named for it, shared by every client (each CLI command costs a
# process start; the suite stays at six): public model → (channel type, upstream model)
MODELS = {
    "sb-anthropic": ("anthropic", "claude-sonnet-5"),
    "sb-openai": ("openai", "gpt-4o"),
    "sb-gemini": ("gemini", "gemini-2.5-flash"),
}
# Every model's price, $ per 1M tokens: input, output, cache read, cache write
PRICE = ("3", "15", "0.3", "3.75")
OUTPUT_CAP = 8192  # converting channels' models refuse Claude Code's 64k max_tokens; the price caps it


def charge(input_tokens: int = 0, output_tokens: int = 0, cache_read: int = 0, cache_write: int = 0) -> int:
    """µ$ for this usage at PRICE, rounded half up as the relay rounds."""
    exact = input_tokens * 3_000_000 + output_tokens * 15_000_000 + cache_read * 300_000 + cache_write * 3_750_000
    return (exact + 500_000) // 1_000_000


@dataclass
class Fakes:
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    gemini: FakeGemini

    def of(self, channel: str):
        return getattr(self, channel)


@pytest.fixture(scope="package")
def fakes():
    made = Fakes(FakeAnthropic(), FakeOpenAI(), FakeGemini())
    yield made
    for fake in (made.anthropic, made.openai, made.gemini):
        fake.close()


@pytest.fixture(scope="package")
def gateway(tmp_path_factory, fakes):
    gw = Gateway(tmp_path_factory.mktemp("clients-gateway"))
    commands = []
    for public, (kind, upstream) in MODELS.items():
        commands.append(("channel", "add", "--name", f"clients-{kind}", "--type", kind, "--base-url", fakes.of(kind).url,
                         "--keys", f"sk-{kind}-upstream", "--models", "", "--model-map", f"{public}={upstream}"))
        cap = () if kind == "anthropic" else ("--max-output-tokens", str(OUTPUT_CAP))
        commands.append(("price", "set", public, "--input", PRICE[0], "--output", PRICE[1], "--cache-read", PRICE[2],
                         "--cache-write", PRICE[3], *cap, "--now"))
    cli_all(gw, commands)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def fresh(fakes):
    for fake in (fakes.anthropic, fakes.openai, fakes.gemini):
        fake.reset_log()


USD = 5
# A funded customer per test, made together up front (each CLI command is a process start).
CUSTOMERS = ("cc-native", "cc-openai", "codex", "gemini-native", "gemini-openai")


@pytest.fixture(scope="package")
def keys(gateway) -> dict[str, str]:
    cli_all(gateway, [("user", "create", "--email", f"{name}@example.com") for name in CUSTOMERS])
    made = cli_all(gateway, [command for name in CUSTOMERS for command in (
        ("topup", "--user", f"{name}@example.com", "--usd", str(USD), "--reason", "e2e funds"),
        ("key", "create", "--user", f"{name}@example.com"))])
    return {name: made[2 * i + 1]["key"] for i, name in enumerate(CUSTOMERS)}


@pytest.fixture
def customer(keys):
    """customer(name) → (email, API key) of a customer holding $5, so a test reads only its own charges."""
    return lambda name: (f"{name}@example.com", keys[name])


def run(executable: Path, args: list[str], env: dict, cwd: Path, timeout: float = 180) -> str:
    """Run a client one-shot with only the environment given (no real keys or proxies leak in);
    its standard output, or a failure showing what it printed."""
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run([str(executable), *args], check=False, env={**base, **env}, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{executable.name} exited {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result.stdout
