"""Ordering a request's candidate routes: priority tiers, weighted random inside a tier, and each
channel's keys round-robin or random (the channel's `key_selection` setting).

Inside a tier the operator's weights are used as set (`priority`, the default), or scaled by what
this process has measured of each channel (`latency`: time to first output and error rate) or by
what the channel costs us (`cost`: its `cost_bp`), per model (relay/snapshot.py `ModelRoute`).
A caller's provider preferences may instead fix the channels' order (`ordered`, relay/steering.py).

The order is a preference, decided here in memory; which route is actually usable right now
(ejected, cooling down, at capacity) is decided in Redis by the hold script, which walks this order
and takes the first route that can serve (relay/admission.py).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from relay.channel_stats import STATS, ChannelStats
from relay.snapshot import ChannelKeyView, ChannelView, Status

KEYS_PER_CHANNEL = 8  # a channel's keys offered per request; rotation spreads the rest over requests
MAX_ROUTES = 48
LIST_PRICE_BP = 10_000
MIN_SHARE = 0.01  # a measured channel keeps at least this share of its weight: it is still sampled


@dataclass(frozen=True, slots=True)
class Route:
    channel: ChannelView
    key: ChannelKeyView
    upstream_model: str
    model: str = ""  # the public model this route serves (a fallback list has routes of several)

    @property
    def ids(self) -> tuple[int, int]:
        return self.channel.id, self.key.id

    @property
    def attempt_key(self) -> tuple[int, int, str]:
        return self.channel.id, self.key.id, self.model


@dataclass(frozen=True, slots=True)
class Plan:
    """The model's candidate channels (panic routing counts them all) and routes in preference order."""

    channels: tuple[ChannelView, ...]
    routes: tuple[Route, ...]
    skipped: tuple[tuple[int, str], ...] = ()  # (channel id, why) for channels left out of the order
    selection: tuple[dict[str, object], ...] = ()  # how a strategy weighed each tier, for the decision trace


class Selector:
    """Keeps per-channel round-robin counters for the life of the process."""

    def __init__(self, rng: random.Random | None = None, stats: ChannelStats | None = None):
        self.rng = rng or random.Random()  # spreads load over channels; nothing secret is drawn  # nosec B311
        self.stats = stats or STATS
        self._counters: dict[int, itertools.count[int]] = {}

    def plan(self, channels: tuple[ChannelView, ...], model: str, supports: Callable[[ChannelView], bool] = lambda c: True,
             strategy: str = "priority", ordered: bool = False) -> Plan:
        """Every route worth trying, best first. `channels` come highest priority first, or in the
        caller's order when `ordered` (then each channel is its own tier)."""
        skipped: list[tuple[int, str]] = []
        usable: list[ChannelView] = []
        for channel in channels:
            if not supports(channel):
                skipped.append((channel.id, "unsupported_endpoint"))
            elif not any(k.status == Status.ENABLED for k in channel.keys):
                skipped.append((channel.id, "no_enabled_key"))
            else:
                usable.append(channel)
        routes: list[Route] = []
        selection: list[dict[str, object]] = []
        tiers = [[c] for c in usable] if ordered else [list(t) for _, t in itertools.groupby(usable, key=lambda c: c.priority)]
        for tier in tiers:
            weights = self.tier_weights(tier, strategy)
            if weights is not None:
                selection.append({"strategy": strategy, "weights": {str(c.id): round(weights[c.id], 3) for c in tier}})
            for channel in self.weighted_order(tier, weights):
                upstream = channel.upstream_model(model)
                routes.extend(Route(channel, key, upstream, model) for key in self.key_order(channel))
        return Plan(tuple(usable), tuple(routes[:MAX_ROUTES]), tuple(skipped), tuple(selection))

    def weighted_order(self, channels: list[ChannelView], weights: dict[int, float] | None = None) -> list[ChannelView]:
        """A weighted random order without replacement (Efraimidis–Spirakis); weight 0 goes last."""
        if len(channels) <= 1:
            return channels
        def weight(c: ChannelView) -> float:
            return weights[c.id] if weights is not None else float(c.weight)

        weighted = [c for c in channels if weight(c) > 0]
        idle = [c for c in channels if weight(c) <= 0]
        weighted.sort(key=lambda c: self.rng.random() ** (1.0 / weight(c)), reverse=True)
        self.rng.shuffle(idle)
        return weighted + idle

    # --- strategies: how a tier's weights are scaled ---------------------------------------------
    def tier_weights(self, tier: list[ChannelView], strategy: str) -> dict[int, float] | None:
        """The tier's weights under `strategy`; None keeps the operator's as they are."""
        if len(tier) <= 1 or strategy == "priority":
            return None
        if strategy == "cost":
            return cost_weights(tier)
        if strategy == "latency":
            return self.latency_weights(tier)
        return None

    def latency_weights(self, tier: list[ChannelView]) -> dict[int, float] | None:
        """Weight × (fastest time to first output in the tier / this channel's) × (1 − error rate)².
        A channel not measured yet counts as the fastest, so it gets traffic and is measured."""
        seen = {c.id: a for c in tier if (a := self.stats.get(c.id)) is not None and a.ttft_ms is not None}
        if not seen:
            return None
        fastest = min(a.ttft_ms for a in seen.values() if a.ttft_ms is not None)
        out: dict[int, float] = {}
        for c in tier:
            a = self.stats.get(c.id)
            speed = fastest / a.ttft_ms if a is not None and a.ttft_ms is not None else 1.0
            health = (1.0 - a.error_rate) ** 2 if a is not None else 1.0
            out[c.id] = c.weight * max(MIN_SHARE, speed * health) if c.weight > 0 else 0.0
        return out

    def key_order(self, channel: ChannelView) -> list[ChannelKeyView]:
        keys = [k for k in channel.keys if k.status == Status.ENABLED]
        if len(keys) > 1:
            if channel.config.key_selection == "random":
                self.rng.shuffle(keys)
            else:
                start = next(self._counters.setdefault(channel.id, itertools.count())) % len(keys)
                keys = keys[start:] + keys[:start]
        return keys[:KEYS_PER_CHANNEL]


def cost_weights(tier: list[ChannelView]) -> dict[int, float]:
    """Weight × (cheapest `cost_bp` in the tier / this channel's)²: a channel at half the cost gets
    four times the share. A channel with no cost set costs list price."""
    costs = {c.id: max(1, c.cost_bp if c.cost_bp is not None else LIST_PRICE_BP) for c in tier}
    cheapest = min((costs[c.id] for c in tier if c.weight > 0), default=LIST_PRICE_BP)
    return {c.id: c.weight * (cheapest / costs[c.id]) ** 2 if c.weight > 0 else 0.0 for c in tier}
