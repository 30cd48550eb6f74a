"""Choosing a channel and a key for a request: priority tiers, weighted random inside a tier."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from relay.snapshot import ChannelKeyView, ChannelView, Status


@dataclass(frozen=True, slots=True)
class Route:
    channel: ChannelView
    key: ChannelKeyView
    upstream_model: str


class Selector:
    """Picks routes; keeps per-channel round-robin counters for the life of the process."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self._counters: dict[int, itertools.count] = {}

    def usable_keys(self, channel: ChannelView, tried: set[tuple[int, int]]) -> list[ChannelKeyView]:
        return [k for k in channel.keys if k.status == Status.ENABLED and (channel.id, k.id) not in tried]

    def pick(self, channels: tuple[ChannelView, ...], model: str, tried: set[tuple[int, int]]) -> Route | None:
        """The next route not yet tried: highest priority tier with a usable key, weighted inside it."""
        for _, tier in itertools.groupby(channels, key=lambda c: c.priority):
            open_channels = [c for c in tier if self.usable_keys(c, tried)]
            while open_channels:
                channel = self._weighted(open_channels)
                keys = self.usable_keys(channel, tried)
                if keys:
                    return Route(channel, self._key(channel, keys), channel.upstream_model(model))
                open_channels.remove(channel)
        return None

    def _weighted(self, channels: list[ChannelView]) -> ChannelView:
        if len(channels) == 1:
            return channels[0]
        weights = [max(c.weight, 0) for c in channels]
        if not any(weights):
            return self.rng.choice(channels)
        return self.rng.choices(channels, weights=weights, k=1)[0]

    def _key(self, channel: ChannelView, keys: list[ChannelKeyView]) -> ChannelKeyView:
        if len(keys) == 1:
            return keys[0]
        if channel.config.get("key_selection") == "random":
            return self.rng.choice(keys)
        counter = self._counters.setdefault(channel.id, itertools.count())
        return keys[next(counter) % len(keys)]
