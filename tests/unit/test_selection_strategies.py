"""Selection strategies inside a priority tier: the operator's weights scaled by measured time to
first output and error rate (`latency`) or by what each channel costs us (`cost`), and the caller's
provider preferences (relay/steering.py `prefer`)."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from relay.channel_config import parse_config
from relay.channel_stats import ChannelStats
from relay.selector import Selector, cost_weights
from relay.snapshot import ChannelKeyView, ChannelView
from relay.steering import Preferences, prefer


def channel(cid: int, priority: int = 0, weight: int = 1, **kwargs) -> ChannelView:
    return ChannelView(id=cid, name=f"c{cid}", type="openai", base_url="http://x", models=("m",),
                       keys=(ChannelKeyView(id=cid * 100, secret="sk"),), priority=priority, weight=weight, **kwargs)


def firsts(selector: Selector, channels: tuple[ChannelView, ...], strategy: str, n: int = 2000) -> Counter:
    return Counter(selector.plan(channels, "m", strategy=strategy).routes[0].channel.id for _ in range(n))


def test_priority_keeps_the_operators_weights_and_notes_nothing():
    selector = Selector(random.Random(1), ChannelStats())
    plan = selector.plan((channel(1, cost_bp=1000), channel(2)), "m", strategy="priority")
    assert plan.selection == ()
    counts = firsts(selector, (channel(1, cost_bp=1000), channel(2)), "priority")
    assert 0.45 < counts[1] / 2000 < 0.55


def test_cost_favours_the_cheaper_upstream_by_the_square_of_the_ratio():
    assert cost_weights([channel(1, cost_bp=5000), channel(2, cost_bp=None), channel(3, weight=0, cost_bp=1)]) == {1: 1.0, 2: 0.25, 3: 0.0}
    selector = Selector(random.Random(2), ChannelStats())
    counts = firsts(selector, (channel(1, cost_bp=5000), channel(2, cost_bp=10_000)), "cost")
    assert 0.75 < counts[1] / 2000 < 0.85  # 4:1
    plan = selector.plan((channel(1, cost_bp=5000), channel(2, cost_bp=10_000)), "m", strategy="cost")
    assert plan.selection == ({"strategy": "cost", "weights": {"1": 1.0, "2": 0.25}},)


def test_cost_never_crosses_priority_tiers():
    selector = Selector(random.Random(3), ChannelStats())
    for _ in range(20):
        plan = selector.plan((channel(1, priority=10, cost_bp=9000), channel(2, cost_bp=100)), "m", strategy="cost")
        assert [r.channel.id for r in plan.routes] == [1, 2]


def test_latency_favours_the_faster_and_healthier_channel():
    stats = ChannelStats()
    for _ in range(20):
        stats.answered(1, 200)
        stats.answered(2, 800)
    selector = Selector(random.Random(4), stats)
    weights = selector.latency_weights([channel(1), channel(2), channel(3)])
    assert weights == {1: 1.0, 2: 0.25, 3: 1.0}  # 3 is not measured yet: it gets traffic to be measured
    for _ in range(10):
        stats.failed(1)
    failing = selector.latency_weights([channel(1), channel(2)])
    assert failing is not None and failing[1] < failing[2]
    counts = firsts(selector, (channel(1), channel(2)), "latency")
    assert counts[2] > counts[1]


def test_latency_without_measurements_keeps_the_weights():
    selector = Selector(random.Random(5), ChannelStats())
    assert selector.latency_weights([channel(1), channel(2)]) is None
    assert selector.plan((channel(1), channel(2)), "m", strategy="latency").selection == ()


def named(cid: int, name: str, tag: str | None = None, priority: int = 0) -> ChannelView:
    return replace(channel(cid, priority=priority, tag=tag, config=parse_config("openai", {"public": True})), name=name)


def test_prefer_applies_only_ignore_order_and_no_fallbacks():
    chans = (named(1, "a", "eu", 10), named(2, "b", "us"), named(3, "c", "eu"))
    public = {"a": frozenset({1}), "b": frozenset({2}), "c": frozenset({3}), "eu": frozenset({1, 3}), "us": frozenset({2})}

    def ids(prefs: Preferences) -> list[int]:
        return [c.id for c in prefer(chans, prefs, public, lambda sort, c: 0.0).channels]

    assert ids(Preferences(only=("eu",))) == [1, 3]
    assert ids(Preferences(ignore=("eu",))) == [2]
    assert ids(Preferences(order=("c", "b"))) == [3, 2, 1]
    assert ids(Preferences(order=("c",), allow_fallbacks=False)) == [3]
    assert ids(Preferences(allow_fallbacks=False)) == [1]
    assert prefer(chans, Preferences(only=("us",)), public, lambda s, c: 0.0).left_out == ((1, "provider_only"), (3, "provider_only"))
    by_id = prefer(chans, Preferences(sort="price"), public, lambda sort, c: -c.id)
    assert [c.id for c in by_id.channels] == [3, 2, 1] and by_id.ordered
