"""`python -m bench.affinity`: how much of a conversation's input the upstream reports as cached, with
and without prompt-cache affinity (relay/affinity.py).

A real `switchboard relay` process on an embedded Redis, one channel of 4 upstream keys in front of a
fake upstream whose usage reports input as cached only when the same key saw the prompt's prefix
before (tests/fakes/prompt_cache.py, both of its ways of forgetting: `strict` — a conversation is
cached only at the key that served its latest turn; `prefix` — every key keeps every prefix it saw).
Several 20-turn conversations (a 600-word system prompt, a short question per turn, each turn
resending the whole history) per configuration: affinity on (`SWITCHBOARD_AFFINITY_TTL_SECONDS=600`)
and off (`0`), channel keys chosen round robin and at random.

Prints one table: the cached share of all input tokens, and how many keys a conversation touched.
Measures, asserts nothing; a run takes well under a minute.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.measure import free_ports, health, wait_http
from controlplane.embedded_redis import EmbeddedRedis
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.prompt_cache import PREFIX, STRICT, PromptCache

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEYS = "sk-aff-1,sk-aff-2,sk-aff-3,sk-aff-4"
SYSTEM = " ".join(["You are a meticulous travel planner; answer with dates, prices and sources."] * 50)


class Setup:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-affinity-"))
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(SWITCHBOARD_INSTANCE=str(self.dir), SWITCHBOARD_LOG_LEVEL="WARNING", SWITCHBOARD_ALLOWED_PRIVATE_NETWORKS="127.0.0.0/8")
        self.redis = EmbeddedRedis(self.dir)
        self.fakes = {mode: FakeOpenAI(models=["m"], prompt_cache=PromptCache(mode)) for mode in (STRICT, PREFIX)}
        self.relay: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> dict:
        out = subprocess.run([PY, "-m", "controlplane", *args, "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        result: dict = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def start(self) -> None:
        self.env["REDIS_URL"] = self.redis.acquire()
        subprocess.run([PY, "-m", "controlplane", "db", "upgrade"], cwd=ROOT, env=self.env, capture_output=True, check=True)
        for mode, fake in self.fakes.items():
            for selection in ("round_robin", "random"):
                model = f"{mode}-{selection}"
                self.cli("channel", "add", "--name", model, "--type", "openai", "--base-url", fake.url, "--keys", KEYS, "--models", model,
                         "--config", json.dumps({"key_selection": selection}))
                self.cli("price", "set", model, "--input", "1", "--output", "2", "--now")
        self.cli("user", "create", "--email", "affinity@example.com")
        self.cli("topup", "--user", "affinity@example.com", "--usd", "1000", "--reason", "benchmark")
        self.key = self.cli("key", "create", "--user", "affinity@example.com", "--name", "affinity")["key"]

    def relay_on(self, ttl: int) -> str:
        """A relay process with affinity's TTL set to `ttl` (0: off); its URL."""
        self.stop_relay()
        (port,) = free_ports(1)
        env = dict(self.env, SWITCHBOARD_AFFINITY_TTL_SECONDS=str(ttl))
        log = open(self.dir / f"relay-{ttl}.log", "ab")
        self.relay = subprocess.Popen([PY, "-m", "controlplane", "relay", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz")
        deadline = time.time() + 30
        while time.time() < deadline and health(url)["snapshot_version"] == 0:
            time.sleep(0.1)
        return url

    def stop_relay(self) -> None:
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            self.relay.wait(timeout=15)
        self.relay = None

    def stop(self) -> None:
        self.stop_relay()
        for fake in self.fakes.values():
            fake.close()
        self.redis.release()
        shutil.rmtree(self.dir, ignore_errors=True)


def conversation(session: requests.Session, url: str, key: str, model: str, number: int, turns: int) -> tuple[int, int]:
    """(input tokens, of which cached) over one conversation."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Conversation {number}: plan a week in Lisbon."}]
    prompt = cached = 0
    for turn in range(turns):
        reply = session.post(url + "/v1/chat/completions", json={"model": model, "messages": messages, "max_tokens": 50},
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)
        reply.raise_for_status()
        body = reply.json()
        prompt += body["usage"]["prompt_tokens"]
        cached += body["usage"]["prompt_tokens_details"]["cached_tokens"]
        messages += [body["choices"][0]["message"], {"role": "user", "content": f"Day {turn + 2}: where should we eat, and what does it cost?"}]
    return prompt, cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10, help="conversations per configuration")
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args(argv)
    setup = Setup()
    rows = []
    numbers = iter(range(1_000_000))  # every conversation opens differently
    try:
        setup.start()
        session = requests.Session()
        for ttl in (600, 0):
            url = setup.relay_on(ttl)
            for mode, fake in setup.fakes.items():
                for selection in ("round_robin", "random"):
                    model = f"{mode}-{selection}"
                    prompt = cached = 0
                    keys_touched = []
                    for _ in range(args.conversations):
                        fake.reset_log()
                        p, c = conversation(session, url, setup.key, model, next(numbers), args.turns)
                        prompt, cached = prompt + p, cached + c
                        keys_touched.append(len(set(fake.keys_seen())))
                    rows.append({"affinity": "on" if ttl else "off", "cache": mode, "key_selection": selection,
                                 "cached_share": round(cached / prompt, 3), "keys_per_conversation": round(sum(keys_touched) / len(keys_touched), 2),
                                 "input_tokens": prompt})
    finally:
        setup.stop()
    print(f"{args.conversations} conversations × {args.turns} turns per row, one channel of 4 keys\n")
    print("| affinity | upstream cache | key selection | cached share of input | keys per conversation |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['affinity']} | {r['cache']} | {r['key_selection']} | {r['cached_share']:.1%} | {r['keys_per_conversation']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
