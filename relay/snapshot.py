"""The relay's routing snapshot: the contract between control plane and relay for what does not
grow with customers (channels and their keys, groups, prices, bans of addresses).

The control plane fills these frozen dataclasses from SQL, serialises them with `to_payload`, and
publishes the bytes through Redis; every relay process parses them with `from_payload` and swaps the
whole snapshot in at once. API keys and their owners are per-record entries instead (relay/keys.py),
so this stays the same size at a million keys. Nothing here touches SQL or Flask.
"""
from __future__ import annotations

import bisect
import fnmatch
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.channel_config import NO_CONFIG, ChannelConfig, load_config
from relay.pricing import Price

if TYPE_CHECKING:
    from relay.keys import KeyView

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Status:
    ENABLED = "enabled"
    DISABLED = "disabled"  # by an operator; never changed automatically
    AUTO_DISABLED = "auto_disabled"


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per minute, tokens per minute, concurrent requests; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)

    def to_payload(self) -> list[int | None]:
        return [self.rpm, self.tpm, self.concurrency]

    @classmethod
    def from_payload(cls, raw: list[int | None] | None) -> Limits:
        return cls(*raw) if raw else NO_LIMITS


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    multiplier_bp: int = 10_000
    model_patterns: tuple[str, ...] = ()  # fnmatch globs; empty allows every model
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    # The capacity queue (relay/capacity_queue.py): seconds a request waits when every route of its
    # model is full (0: 429 at once), and the group's rank among waiting requests (higher first).
    queue_seconds: int = 10
    priority: int = 0

    def allows(self, model: str) -> bool:
        return not self.model_patterns or any(fnmatch.fnmatchcase(model, p) for p in self.model_patterns)

    @property
    def limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.concurrency)


@dataclass(frozen=True, slots=True)
class ChannelKeyView:
    id: int
    secret: str
    status: str = Status.ENABLED
    # When the status last changed (epoch): a relay's "dead key" mark older than this is stale.
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class ChannelView:
    id: int
    name: str
    type: str
    base_url: str
    models: tuple[str, ...]
    keys: tuple[ChannelKeyView, ...]
    model_map: dict[str, str] = field(default_factory=dict)  # public name → upstream name
    groups: tuple[str, ...] = ()  # empty: open to every group
    priority: int = 0
    weight: int = 1
    status: str = Status.ENABLED
    config: ChannelConfig = NO_CONFIG  # type-specific settings, typed (relay/channel_config.py)
    limits: Limits = NO_LIMITS  # upstream capacity of the whole channel
    key_limits: Limits = NO_LIMITS  # upstream capacity of each of its keys
    tag: str | None = None  # the operator's label; callers may name it when `config.public` is set
    cost_bp: int | None = None  # what the upstream charges us, basis points of list price (None: list)

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.model_map

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def open_to(self, group: str) -> bool:
        return not self.groups or group in self.groups

    @property
    def public_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.models, *self.model_map)))


SELECTION_STRATEGIES = ("priority", "latency", "cost")


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """The operator's routing of one public model name: how its channels are chosen inside a
    priority tier (`strategy`), and, for an alias, the models it stands for, tried in order."""

    model: str
    strategy: str = "priority"  # one of SELECTION_STRATEGIES
    targets: tuple[str, ...] = ()  # non-empty: the name is an alias for these models

    def to_payload(self) -> dict[str, Any]:
        return {"model": self.model, "strategy": self.strategy, "targets": list(self.targets)}

    @classmethod
    def from_payload(cls, raw: dict[str, Any]) -> ModelRoute:
        strategy = raw.get("strategy") or "priority"
        return cls(raw["model"], strategy if strategy in SELECTION_STRATEGIES else "priority", tuple(raw.get("targets") or ()))


@dataclass(frozen=True, slots=True)
class BanView:
    kind: str  # user | key | ip
    subject: str  # user id, key id, or an IP address / CIDR range
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(slots=True)
class Bans:
    """Active bans of addresses and ranges; expiry is checked at request time. Bans of a user or a
    key travel in that key's record (relay/keys.py)."""

    networks: tuple[tuple[IPNetwork, BanView], ...] = ()

    def for_ip(self, ip: IPAddress | None, now: float) -> BanView | None:
        if ip is not None:
            for net, ban in self.networks:
                if ip.version == net.version and ip in net and ban.active(now):
                    return ban
        return None


@dataclass(slots=True)
class Snapshot:
    version: int
    groups: dict[str, GroupView]
    prices: dict[str, tuple[Price, ...]]  # model → prices sorted by effective_from
    channels: tuple[ChannelView, ...]
    bans: Bans
    built_at: float = 0.0
    model_routes: dict[str, ModelRoute] = field(default_factory=dict)  # public name → the operator's routing
    # "__served__" → frozenset of model names; (group, model) → tuple of ChannelView
    _routes: dict[str | tuple[str, str], Any] = field(default_factory=dict, repr=False)

    # --- lookups -------------------------------------------------------------------------------
    def price_at(self, model: str, when: float) -> Price | None:
        """The price in force at `when`: the latest one whose effective_from is not after it."""
        history = self.prices.get(model)
        if not history:
            return None
        index = bisect.bisect_right([p.effective_from for p in history], when) - 1
        return history[index] if index >= 0 else None

    def served_models(self) -> frozenset[str]:
        """Every public model name an enabled channel serves (indexed once per snapshot)."""
        served: frozenset[str] | None = self._routes.get("__served__")
        if served is None:
            served = frozenset(m for c in self.channels if c.status == Status.ENABLED for m in c.public_models)
            self._routes["__served__"] = served
        return served

    def channels_for(self, group: str, model: str) -> tuple[ChannelView, ...]:
        """Enabled channels serving `model` to `group`, highest priority first.

        Cached per snapshot for the models it serves only: the cache is bounded by the snapshot,
        and a caller naming models that do not exist cannot grow it."""
        if model not in self.served_models():
            return ()
        cache_key = (group, model)
        found: tuple[ChannelView, ...] | None = self._routes.get(cache_key)
        if found is None:
            found = tuple(
                sorted(
                    (
                        c
                        for c in self.channels
                        if c.status == Status.ENABLED and c.serves(model) and c.open_to(group)
                    ),
                    key=lambda c: -c.priority,
                )
            )
            self._routes[cache_key] = found
        return found

    def alias_targets(self, model: str) -> tuple[str, ...]:
        """The models an operator's alias stands for; () when `model` is no alias."""
        found = self.model_routes.get(model)
        return found.targets if found is not None else ()

    def strategy_of(self, model: str) -> str:
        found = self.model_routes.get(model)
        return found.strategy if found is not None else "priority"

    def public_providers(self) -> dict[str, frozenset[int]]:
        """What a caller may name in `provider.order/only/ignore`: the name and tag of every channel
        the operator made public (`config.public`), lower-cased, each with the channels it means."""
        found: dict[str, frozenset[int]] | None = self._routes.get("__providers__")
        if found is None:
            names: dict[str, set[int]] = {}
            for c in self.channels:
                if c.config.public:
                    for name in (c.name, c.tag):
                        if name:
                            names.setdefault(name.lower(), set()).add(c.id)
            found = {name: frozenset(ids) for name, ids in names.items()}
            self._routes["__providers__"] = found
        return found

    def providers_for(self, group: str, model: str) -> list[str]:
        """What a caller of `group` may name in `provider.order/only/ignore` for `model` (for an
        alias: for any model it stands for): public channels' names and tags, in route order."""
        names: list[str] = []
        for target in self.alias_targets(model) or (model,):
            for c in self.channels_for(group, target):
                if c.config.public:
                    names += [n.lower() for n in (c.name, c.tag) if n and n.lower() not in names]
        return names

    def models_for_key(self, key: KeyView, now: float | None = None) -> list[str]:
        """Every model this key may call: served, priced, open to its group, on its allow-list."""
        now = time.time() if now is None else now
        group = self.groups.get(key.group)
        if group is None:
            return []
        usable = {
            m
            for m in self.served_models()
            if group.allows(m)
            and key.allows_model(m)
            and self.price_at(m, now) is not None
            and self.channels_for(key.group, m)
        }
        # An alias is listed when one of the models it stands for is.
        aliases = {name for name, r in self.model_routes.items() if r.targets and usable.intersection(r.targets)}
        return sorted(usable | aliases)

    # --- serialisation -------------------------------------------------------------------------
    def to_payload(self, encrypt: Callable[[str], str]) -> dict[str, Any]:
        return {
            "version": self.version,
            "built_at": self.built_at,
            "groups": [
                {
                    "name": g.name,
                    "multiplier_bp": g.multiplier_bp,
                    "model_patterns": list(g.model_patterns),
                    "rpm": g.rpm,
                    "tpm": g.tpm,
                    "concurrency": g.concurrency,
                    "queue_seconds": g.queue_seconds,
                    "priority": g.priority,
                }
                for g in self.groups.values()
            ],
            "prices": [p.to_dict() for history in self.prices.values() for p in history],
            "channels": [
                {
                    "id": c.id,
                    "name": c.name,
                    "type": c.type,
                    "base_url": c.base_url,
                    "models": list(c.models),
                    "model_map": c.model_map,
                    "groups": list(c.groups),
                    "priority": c.priority,
                    "weight": c.weight,
                    "status": c.status,
                    "config": c.config.to_payload(),
                    "limits": c.limits.to_payload(),
                    "key_limits": c.key_limits.to_payload(),
                    "tag": c.tag,
                    "cost_bp": c.cost_bp,
                    "keys": [{"id": k.id, "secret": encrypt(k.secret), "status": k.status, "since": k.since} for k in c.keys],
                }
                for c in self.channels
            ],
            "bans": [
                {"kind": b.kind, "subject": b.subject, "expires_at": b.expires_at}
                for _, b in self.bans.networks
            ],
            "model_routes": [r.to_payload() for r in self.model_routes.values()],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], decrypt: Callable[[str], str]) -> Snapshot:
        groups = {
            g["name"]: GroupView(
                name=g["name"],
                multiplier_bp=g["multiplier_bp"],
                model_patterns=tuple(g["model_patterns"]),
                rpm=g["rpm"],
                tpm=g["tpm"],
                concurrency=g["concurrency"],
                queue_seconds=g.get("queue_seconds", 10),
                priority=g.get("priority", 0),
            )
            for g in payload["groups"]
        }
        return cls(
            version=payload["version"],
            built_at=payload.get("built_at", 0.0),
            groups=groups,
            prices=group_prices(Price.from_dict(p) for p in payload["prices"]),
            channels=tuple(
                ChannelView(
                    id=c["id"],
                    name=c["name"],
                    type=c["type"],
                    base_url=c["base_url"],
                    models=tuple(c["models"]),
                    model_map=dict(c["model_map"]),
                    groups=tuple(c["groups"]),
                    priority=c["priority"],
                    weight=c["weight"],
                    status=c["status"],
                    config=load_config(c["type"], c.get("config")),
                    limits=Limits.from_payload(c.get("limits")),
                    key_limits=Limits.from_payload(c.get("key_limits")),
                    tag=c.get("tag"),
                    cost_bp=c.get("cost_bp"),
                    keys=tuple(
                        ChannelKeyView(id=k["id"], secret=decrypt(k["secret"]), status=k["status"], since=k.get("since", 0.0))
                        for k in c["keys"]
                    ),
                )
                for c in payload["channels"]
            ),
            bans=index_bans(BanView(**b) for b in payload["bans"]),
            model_routes={r["model"]: ModelRoute.from_payload(r) for r in payload.get("model_routes", ())},
        )


def group_prices(prices: Iterable[Price]) -> dict[str, tuple[Price, ...]]:
    by_model: dict[str, list[Price]] = {}
    for p in prices:
        by_model.setdefault(p.model, []).append(p)
    return {m: tuple(sorted(ps, key=lambda p: p.effective_from)) for m, ps in by_model.items()}


def index_bans(bans: Iterable[BanView]) -> Bans:
    """Bans of addresses and ranges, indexed; other kinds are not the snapshot's (relay/keys.py)."""
    return Bans(networks=tuple((ipaddress.ip_network(b.subject, strict=False), b) for b in bans if b.kind == "ip"))


def empty_snapshot() -> Snapshot:
    return Snapshot(version=0, groups={}, prices={}, channels=(), bans=Bans())
