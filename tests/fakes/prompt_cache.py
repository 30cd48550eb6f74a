"""A provider's prompt cache, as the fake upstreams model it: input is reported as cached only when
the same upstream key saw the prompt's prefix before.

Prompts are chat messages; a message counts 4 tokens plus one per word of its text. The cached part
of a prompt is the longest run of leading messages that an earlier request to the same key sent
whole (what a provider's prefix cache gives back for a conversation's next turn).

Two ways the cache forgets, because real caches do both:
- `strict`: a conversation (named by its leading messages up to the first user message) is cached only at the key that served its
  latest turn — a turn sent to another key moves it. This is the case affinity is for: caches are
  small and a prefix that went elsewhere is evicted before it comes back.
- `prefix`: every key keeps every prefix it saw, so coming back to a key after other keys served a
  few turns still hits the older prefix.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

STRICT, PREFIX = "strict", "prefix"


def message_tokens(message: Any) -> int:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)
    return 4 + len(str(content or "").split())


def _digest(messages: list[Any]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


@dataclass
class PromptCache:
    mode: str = STRICT
    seen: dict[str, set[str]] = field(default_factory=dict)  # key → prefixes it holds (PREFIX)
    conversations: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # opening → (key, prefixes) (STRICT)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usage(self, key: str, messages: list[Any]) -> tuple[int, int]:
        """(prompt tokens, of which cached) for `messages` sent with `key`; remembers the prompt."""
        sizes = [message_tokens(m) for m in messages]
        prefixes = [_digest(messages[:i]) for i in range(1, len(messages) + 1)]
        with self.lock:
            held = self._held(key, messages)
            cached = 0
            for i in range(len(messages) - 1, 0, -1):  # the whole prompt is never a hit: something is new
                if prefixes[i - 1] in held:
                    cached = sum(sizes[:i])
                    break
            held.add(prefixes[-1])
        return sum(sizes), cached

    def _held(self, key: str, messages: list[Any]) -> set[str]:
        if self.mode == PREFIX:
            return self.seen.setdefault(key, set())
        opening = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") not in ("system", "developer")), 0)
        conversation = _digest(messages[:opening + 1])
        owner = self.conversations.get(conversation)
        if owner is None or owner[0] != key:
            owner = (key, set())
            self.conversations[conversation] = owner
        return owner[1]

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()
            self.conversations.clear()
