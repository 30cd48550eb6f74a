"""Ordering a request's candidate routes: priority tiers, weighted random inside a tier, and each
channel's keys round-robin or random (the channel's `key_selection` setting).

The order is a preference, decided here in memory; which route is actually usable right now
(ejected, cooling down, at capacity) is decided in Redis by the hold script, which walks this order
and takes the first route that can serve (relay/admission.py).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from relay.snapshot import ChannelKeyView, ChannelView, Status

KEYS_PER_CHANNEL = 8  # a channel's keys offered per request; rotation spreads the rest over requests
MAX_ROUTES = 48


@dataclass(frozen=True, slots=True)
class Route:
    channel: ChannelView
    key: ChannelKeyView
    upstream_model: str

    @property
    def ids(self) -> tuple[int, int]:
        return self.channel.id, self.key.id


@dataclass(frozen=True, slots=True)
class Plan:
    """The model's candidate channels (panic routing counts them all) and routes in preference order."""

    channels: tuple[ChannelView, ...]
    routes: tuple[Route, ...]
    skipped: tuple[tuple[int, str], ...] = ()  # (channel id, why) for channels left out of the order


class Selector:
    """Keeps per-channel round-robin counters for the life of the process."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self._counters: dict[int, itertools.count[int]] = {}

    def plan(self, channels: tuple[ChannelView, ...], model: str, supports: Callable[[ChannelView], bool] = lambda c: True) -> Plan:
        """Every route worth trying, best first. `channels` come highest priority first."""
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
        for _, tier in itertools.groupby(usable, key=lambda c: c.priority):
            for channel in self.weighted_order(list(tier)):
                upstream = channel.upstream_model(model)
                routes.extend(Route(channel, key, upstream) for key in self.key_order(channel))
        return Plan(tuple(usable), tuple(routes[:MAX_ROUTES]), tuple(skipped))

    def weighted_order(self, channels: list[ChannelView]) -> list[ChannelView]:
        """A weighted random order without replacement (Efraimidis–Spirakis); weight 0 goes last."""
        if len(channels) <= 1:
            return channels
        weighted = [c for c in channels if c.weight > 0]
        idle = [c for c in channels if c.weight <= 0]
        weighted.sort(key=lambda c: self.rng.random() ** (1.0 / c.weight), reverse=True)
        self.rng.shuffle(idle)
        return weighted + idle

    def key_order(self, channel: ChannelView) -> list[ChannelKeyView]:
        keys = [k for k in channel.keys if k.status == Status.ENABLED]
        if len(keys) > 1:
            if channel.config.get("key_selection") == "random":
                self.rng.shuffle(keys)
            else:
                start = next(self._counters.setdefault(channel.id, itertools.count())) % len(keys)
                keys = keys[start:] + keys[:start]
        return keys[:KEYS_PER_CHANNEL]
