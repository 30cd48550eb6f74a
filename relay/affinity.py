"""Prompt-cache affinity: the turns of one conversation go to the channel key that served the last one.

Providers discount cached input only when a request reaches the upstream account that saw its
prefix before, so spreading one conversation over a channel's keys pays full price for input that
could have been cached. A conversation is named by what the caller says (`prompt_cache_key`, then
`user`, then Anthropic's `metadata.user_id`) or, failing that, by a hash of its stable prefix: the
system prompt or instructions, the tools, and the leading messages up to the first one that is not a
system message. The name is scoped to the account, the group and the model, hashed, and stored in
Redis (relay/redis_keys.py `affinity_key`) with the channel key that last served it, so every relay
process agrees.

The admit script reads the pin and takes that route instead of the selector's choice when it can
serve and is in the same priority tier (a pin never outranks the operator's priorities); it is left
when the route cannot serve (ejected, cooling down, proven dead, at capacity, gone from the
snapshot) or a higher tier can — the pin then moves to the route that served. Each pick and failover rewrites the pin with a fresh TTL, so reading and
writing it cost no round trip of their own (relay/admission.py). Under Redis Cluster the pin is with
the account's money: admit's money call reads it, the walk over the channels tries its route first
among its tier, and settle's money call writes the route used.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from relay import redis_keys

if TYPE_CHECKING:
    from relay.snapshot import ChannelView

# How far into a conversation the prefix reaches: the system and developer messages, then the first
# message that is neither (the first user turn). Later messages change every turn.
_SYSTEM_ROLES = frozenset(("system", "developer"))
_PREFIX_FIELDS = ("system", "instructions", "systemInstruction", "system_instruction", "tools", "tool_config", "toolConfig")
_TURN_LISTS = ("messages", "input", "contents")
_MAX_EXPLICIT_CHARS = 512  # longer caller names are cut before hashing (they are only ever hashed)
_TEXT_WHOLE, _TEXT_END = 1024, 384  # a longer text stands for itself by its length and both ends
_DEPTH, _ITEMS = 4, 32


@dataclass(frozen=True, slots=True)
class Affinity:
    """Which Redis key pins this request's conversation, and how it was named (for the trace)."""

    redis_key: str
    source: str  # prompt_cache_key | user | metadata.user_id | prefix
    ttl: int  # seconds the pin lives after its last use


def _explicit(payload: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("prompt_cache_key", "user"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            return name, value[:_MAX_EXPLICIT_CHARS]
    metadata = payload.get("metadata")
    if isinstance(metadata, dict):
        value = metadata.get("user_id")
        if isinstance(value, str) and value:
            return "metadata.user_id", value[:_MAX_EXPLICIT_CHARS]
    return None


def _brief(value: Any, depth: int = 0) -> Any:
    """A cheap stand-in for a part of a prompt: long texts by their length and ends, nothing deeper
    than a few levels. The pin only has to tell conversations apart; hashing a whole agent's prompt
    (tens of kilobytes of tools and instructions) would cost more than parsing it did."""
    if isinstance(value, str):
        return value if len(value) <= _TEXT_WHOLE else (len(value), value[:_TEXT_END], value[-_TEXT_END:])
    if depth >= _DEPTH:
        return type(value).__name__
    if isinstance(value, list):
        return [len(value), *(_brief(v, depth + 1) for v in value[:_ITEMS])]
    if isinstance(value, dict):
        return [(k, _brief(v, depth + 1)) for k, v in value.items()]
    return value


def _tool_names(tools: Any) -> Any:
    """Tools by name: a list of them is long, and their names are what differ."""
    if not isinstance(tools, list):
        return _brief(tools)
    names = []
    for tool in tools:
        if isinstance(tool, dict):
            function = tool.get("function")
            inner: dict[str, Any] = function if isinstance(function, dict) else tool
            name = inner.get("name")
            names.append(name if isinstance(name, str) else tool.get("type"))
    return names


def stable_prefix(payload: dict[str, Any]) -> list[Any] | None:
    """What stays the same from turn to turn, in brief — or None when the request has no turns
    (embeddings, images, a one-string prompt with no instructions)."""
    parts: list[Any] = [(name, _tool_names(payload[name]) if name.startswith("tool") else _brief(payload[name]))
                        for name in _PREFIX_FIELDS if payload.get(name) is not None]
    has_fixed = bool(parts)
    for name in _TURN_LISTS:
        turns = payload.get(name)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            for turn in turns[:_ITEMS]:
                parts.append(_brief(turn))
                if turn.get("role") not in _SYSTEM_ROLES:
                    break
            return parts
    return parts if has_fixed else None


def affinity_of(payload: Any, account_id: int, group: str, model: str, ttl: int) -> Affinity | None:
    """The request's conversation pin, or None (affinity off, or nothing names a conversation)."""
    if ttl <= 0 or not isinstance(payload, dict):
        return None
    explicit = _explicit(payload)
    if explicit is not None:
        source, material = explicit[0], orjson.dumps([account_id, group, model, explicit[0], explicit[1]])
    else:
        prefix = stable_prefix(payload)
        if prefix is None:
            return None
        try:
            material = orjson.dumps([account_id, group, model, prefix])
        except TypeError:  # a body orjson cannot encode has no prefix worth pinning
            return None
        source = "prefix"
    digest = hashlib.blake2b(material, digest_size=16).hexdigest()
    return Affinity(redis_keys.affinity_key(account_id, digest), source, ttl)


# Lua for the admit and failover scripts (relay/admission.py): `a_pick` runs pick_route with the
# pinned route moved to the front, and maps the indexes back to the plan's order.
AFFINITY_LUA = r"""
-- pick_route's answer, with the pinned route taken instead when it can serve and is in the same
-- priority tier as the route pick_route chose (a pin never outranks a higher tier), plus how the pin
-- fared: 'kept', 'moved' (another route, or none could serve) or 'new'; '' without affinity.
local function a_pick(cs, rs, now, aff, tiers)
  local pick, panic, skips, wait = pick_route(cs, rs, now)
  if not aff then return pick, panic, skips, wait, '' end
  local pinned = redis.call('GET', aff)
  if not pinned then return pick, panic, skips, wait, 'new' end
  if pick == 0 then return pick, panic, skips, wait, 'moved' end
  if rs[pick].key == pinned then return pick, panic, skips, wait, 'kept' end
  for j = pick + 1, #rs do
    local r = rs[j]
    if r.key == pinned then
      if tiers[r.ci] == tiers[rs[pick].ci] and pick_route(cs, {r}, now) == 1 then return j, panic, skips, wait, 'kept' end
      break
    end
  end
  return pick, panic, skips, wait, 'moved'
end

local function a_pin(aff, r, ttl)
  if aff then redis.call('SET', aff, r.key, 'EX', ttl) end
end

-- An optional pin, as the admit and failover scripts take it: ARGV has its TTL (0: none) and the
-- priority of each planned channel; KEYS its name.
local function a_read()
  local ttl = num()
  if ttl <= 0 then return nil, 0, {} end
  local tiers = {}
  for i = 1, num() do tiers[i] = num() end
  return nkey(), ttl, tiers
end
"""


def lua_args(affinity: Affinity | None, channels: tuple[ChannelView, ...]) -> tuple[list[str], list[Any]]:
    """The keys and arguments `a_read` takes."""
    if affinity is None:
        return [], [0]
    return [affinity.redis_key], [affinity.ttl, len(channels), *(c.priority for c in channels)]
