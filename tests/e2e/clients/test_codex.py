"""Codex CLI (the real program, pinned) through `switchboard up`: `codex exec` over the Responses API
(`wire_api = "responses"`), forwarded to an OpenAI channel, answer and exact charge."""
from __future__ import annotations

import pytest

from tests.e2e.clients.conftest import USD, charge, run
from tests.e2e.clients.programs import CODEX, install
from tests.fakes.openai_server import Behaviour

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # the first run installs the program

ANSWER = "Hello from the fake upstream."


def config(gateway_url: str, model: str) -> str:
    """$CODEX_HOME/config.toml: a provider of our own, its key read from SWITCHBOARD_API_KEY; no
    update check, no analytics."""
    return f'''model = "{model}"
model_provider = "switchboard"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.switchboard]
name = "Switchboard"
base_url = "{gateway_url}/v1"
env_key = "SWITCHBOARD_API_KEY"
wire_api = "responses"
'''


def test_codex_exec_over_responses(gateway, fakes, tmp_path, customer):
    codex = install(CODEX)
    email, key = customer("codex")
    home = tmp_path / ".codex"
    home.mkdir()
    (home / "config.toml").write_text(config(gateway.url, "sb-openai"))
    fakes.openai.push(Behaviour(content=ANSWER, prompt_tokens=9_000, cached_tokens=8_000, completion_tokens=12))
    out = run(codex, ["exec", "--skip-git-repo-check", "Say hello"], {"CODEX_HOME": str(home), "SWITCHBOARD_API_KEY": key}, tmp_path)
    assert ANSWER in out
    [sent] = [r for r in fakes.openai.requests if r["path"].endswith("/responses")]
    body = sent["body"]
    assert body["model"] == "gpt-4o" and body["stream"] is True
    # forwarded as Codex wrote it: developer turns, its own fields
    assert [i.get("role") for i in body["input"] if i.get("type") == "message"][:1] == ["developer"]
    assert {"client_metadata", "prompt_cache_key", "include", "tools"} <= body.keys()
    # 1,000 uncached input × $3 + 8,000 cached × $0.30 + 12 output × $15, per 1M
    assert charge(1_000, 12, 8_000) == 5_580
    gateway.wait_for_balance(email, USD * 1_000_000 - 5_580)
