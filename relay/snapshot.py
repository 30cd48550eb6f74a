"""The relay's configuration snapshot: the one contract between control plane and relay.

The control plane fills these frozen dataclasses from SQL, serialises them with `to_payload`, and
publishes the bytes through Redis; every relay process parses them with `from_payload` and swaps the
whole snapshot in at once. Nothing here touches SQL or Flask.
"""
from __future__ import annotations

import bisect
import fnmatch
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from relay.pricing import Price

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Status:
    ENABLED = "enabled"
    DISABLED = "disabled"  # by an operator; never changed automatically
    AUTO_DISABLED = "auto_disabled"


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per minute, tokens per minute, concurrent requests (issue 7); None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)

    def to_payload(self) -> list[int | None]:
        return [self.rpm, self.tpm, self.concurrency]

    @classmethod
    def from_payload(cls, raw: Iterable[int | None] | None) -> Limits:
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

    def allows(self, model: str) -> bool:
        return not self.model_patterns or any(fnmatch.fnmatchcase(model, p) for p in self.model_patterns)

    @property
    def limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.concurrency)


@dataclass(frozen=True, slots=True)
class KeyView:
    """An API key as the relay sees it; looked up by the SHA-256 of the presented secret."""

    id: int
    account_id: int
    user_id: int | None
    group: str
    prefix: str
    status: str = Status.ENABLED
    expires_at: float | None = None
    models: frozenset[str] = frozenset()  # empty: whatever the group allows
    ip_allow: tuple[IPNetwork, ...] = ()
    credit_limit: int | None = None  # µ$; None is unlimited
    # --- spend windows (issue 6), µ$, None is unlimited; enforced by the hold in relay/quota.py ---
    daily_budget: int | None = None  # this key, per UTC calendar day
    monthly_budget: int | None = None  # this key, per UTC calendar month
    member_allowance: int | None = None  # this key's user within an organisation account, per UTC month
    limits: Limits = NO_LIMITS

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models

    def allows_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if not self.ip_allow:
            return True
        return ip is not None and any(ip in net for net in self.ip_allow)


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
    config: dict[str, Any] = field(default_factory=dict)  # type-specific settings (api_version, timeouts, …)
    limits: Limits = NO_LIMITS  # upstream capacity of the whole channel
    key_limits: Limits = NO_LIMITS  # upstream capacity of each of its keys

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.model_map

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def open_to(self, group: str) -> bool:
        return not self.groups or group in self.groups

    @property
    def public_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.models, *self.model_map)))


@dataclass(frozen=True, slots=True)
class BanView:
    kind: str  # user | key | ip
    subject: str  # user id, key id, or an IP address / CIDR range
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(slots=True)
class Bans:
    """Active bans indexed for the relay's checks; expiry is checked at request time."""

    users: dict[int, BanView] = field(default_factory=dict)
    keys: dict[int, BanView] = field(default_factory=dict)
    networks: tuple[tuple[IPNetwork, BanView], ...] = ()

    def for_request(self, user_id: int | None, key_id: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
                    now: float) -> BanView | None:
        for ban in (self.users.get(user_id) if user_id is not None else None, self.keys.get(key_id)):
            if ban is not None and ban.active(now):
                return ban
        if ip is not None:
            for net, ban in self.networks:
                if ip.version == net.version and ip in net and ban.active(now):
                    return ban
        return None


@dataclass(slots=True)
class Snapshot:
    version: int
    keys: dict[str, KeyView]  # sha256 hex → key
    groups: dict[str, GroupView]
    prices: dict[str, tuple[Price, ...]]  # model → prices sorted by effective_from
    channels: tuple[ChannelView, ...]
    bans: Bans
    disabled_users: frozenset[int] = frozenset()
    built_at: float = 0.0
    user_limits: dict[int, Limits] = field(default_factory=dict)  # only users that have limits
    _routes: dict[str | tuple[str, str], Any] = field(default_factory=dict, repr=False)  # memoised lookups

    # --- lookups -------------------------------------------------------------------------------
    def price_at(self, model: str, when: float) -> Price | None:
        """The price in force at `when`: the latest one whose effective_from is not after it."""
        history = self.prices.get(model)
        if not history:
            return None
        index = bisect.bisect_right([p.effective_from for p in history], when) - 1
        return history[index] if index >= 0 else None

    def key_by_id(self, key_id: int) -> KeyView | None:
        """A key by its id (playground tokens name keys by id); indexed once per snapshot."""
        index = self._routes.get("__keys_by_id__")
        if index is None:
            index = {k.id: k for k in self.keys.values()}
            self._routes["__keys_by_id__"] = index
        return index.get(key_id)

    def served_models(self) -> frozenset[str]:
        """Every public model name an enabled channel serves (indexed once per snapshot)."""
        served = self._routes.get("__served__")
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

    def models_for_key(self, key: KeyView, now: float | None = None) -> list[str]:
        """Every model this key may call: served, priced, open to its group, on its allow-list."""
        now = time.time() if now is None else now
        group = self.groups.get(key.group)
        if group is None:
            return []
        return sorted(
            m
            for m in self.served_models()
            if group.allows(m)
            and key.allows_model(m)
            and self.price_at(m, now) is not None
            and self.channels_for(key.group, m)
        )

    # --- serialisation -------------------------------------------------------------------------
    def to_payload(self, encrypt: Callable[[str], str]) -> dict[str, Any]:
        return {
            "version": self.version,
            "built_at": self.built_at,
            "keys": [
                {
                    "hash": h,
                    "id": k.id,
                    "account_id": k.account_id,
                    "user_id": k.user_id,
                    "group": k.group,
                    "prefix": k.prefix,
                    "status": k.status,
                    "expires_at": k.expires_at,
                    "models": sorted(k.models),
                    "ip_allow": [str(n) for n in k.ip_allow],
                    "credit_limit": k.credit_limit,
                    "daily_budget": k.daily_budget,
                    "monthly_budget": k.monthly_budget,
                    "member_allowance": k.member_allowance,
                    "limits": k.limits.to_payload(),
                }
                for h, k in self.keys.items()
            ],
            "groups": [
                {
                    "name": g.name,
                    "multiplier_bp": g.multiplier_bp,
                    "model_patterns": list(g.model_patterns),
                    "rpm": g.rpm,
                    "tpm": g.tpm,
                    "concurrency": g.concurrency,
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
                    "config": c.config,
                    "limits": c.limits.to_payload(),
                    "key_limits": c.key_limits.to_payload(),
                    "keys": [{"id": k.id, "secret": encrypt(k.secret), "status": k.status, "since": k.since} for k in c.keys],
                }
                for c in self.channels
            ],
            "bans": [
                {"kind": b.kind, "subject": b.subject, "expires_at": b.expires_at}
                for b in (*self.bans.users.values(), *self.bans.keys.values(), *(b for _, b in self.bans.networks))
            ],
            "disabled_users": sorted(self.disabled_users),
            "user_limits": [[uid, lim.to_payload()] for uid, lim in self.user_limits.items()],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], decrypt: Callable[[str], str]) -> Snapshot:
        keys = {
            k["hash"]: KeyView(
                id=k["id"],
                account_id=k["account_id"],
                user_id=k["user_id"],
                group=k["group"],
                prefix=k["prefix"],
                status=k["status"],
                expires_at=k["expires_at"],
                models=frozenset(k["models"]),
                ip_allow=tuple(ipaddress.ip_network(n, strict=False) for n in k["ip_allow"]),
                credit_limit=k["credit_limit"],
                daily_budget=k.get("daily_budget"),
                monthly_budget=k.get("monthly_budget"),
                member_allowance=k.get("member_allowance"),
                limits=Limits.from_payload(k.get("limits")),
            )
            for k in payload["keys"]
        }
        groups = {
            g["name"]: GroupView(
                name=g["name"],
                multiplier_bp=g["multiplier_bp"],
                model_patterns=tuple(g["model_patterns"]),
                rpm=g["rpm"],
                tpm=g["tpm"],
                concurrency=g["concurrency"],
            )
            for g in payload["groups"]
        }
        return cls(
            version=payload["version"],
            built_at=payload.get("built_at", 0.0),
            keys=keys,
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
                    config=dict(c["config"]),
                    limits=Limits.from_payload(c.get("limits")),
                    key_limits=Limits.from_payload(c.get("key_limits")),
                    keys=tuple(
                        ChannelKeyView(id=k["id"], secret=decrypt(k["secret"]), status=k["status"], since=k.get("since", 0.0))
                        for k in c["keys"]
                    ),
                )
                for c in payload["channels"]
            ),
            bans=index_bans(BanView(**b) for b in payload["bans"]),
            disabled_users=frozenset(payload.get("disabled_users", ())),
            user_limits={uid: Limits.from_payload(raw) for uid, raw in payload.get("user_limits", ())},
        )


def group_prices(prices: Iterable[Price]) -> dict[str, tuple[Price, ...]]:
    by_model: dict[str, list[Price]] = {}
    for p in prices:
        by_model.setdefault(p.model, []).append(p)
    return {m: tuple(sorted(ps, key=lambda p: p.effective_from)) for m, ps in by_model.items()}


def index_bans(bans: Iterable[BanView]) -> Bans:
    index = Bans()
    networks = []
    for ban in bans:
        if ban.kind == "user":
            index.users[int(ban.subject)] = ban
        elif ban.kind == "key":
            index.keys[int(ban.subject)] = ban
        elif ban.kind == "ip":
            networks.append((ipaddress.ip_network(ban.subject, strict=False), ban))
    index.networks = tuple(networks)
    return index


def empty_snapshot() -> Snapshot:
    return Snapshot(version=0, keys={}, groups={}, prices={}, channels=(), bans=Bans())
