"""The selector's preference order: priority tiers, weights, key rotation, static exclusions."""
from __future__ import annotations

import random
from collections import Counter

from relay.channel_config import parse_config
from relay.routing import remaining_routes
from relay.selector import KEYS_PER_CHANNEL, Selector
from relay.snapshot import ChannelKeyView, ChannelView, Status


def channel(cid: int, priority: int = 0, weight: int = 1, keys: int = 1, **kwargs) -> ChannelView:
    key_views = tuple(ChannelKeyView(id=cid * 100 + i, secret=f"sk-{cid}-{i}") for i in range(keys))
    return ChannelView(id=cid, name=f"c{cid}", type="openai", base_url="http://x", models=("m",), keys=key_views,
                       priority=priority, weight=weight, **kwargs)


def by_priority(*channels):
    return tuple(sorted(channels, key=lambda c: -c.priority))


def test_higher_priority_tiers_come_first_whatever_the_weights():
    selector = Selector(random.Random(1))
    for _ in range(50):
        plan = selector.plan(by_priority(channel(1, priority=0, weight=1000), channel(2, priority=10, weight=1)), "m")
        assert [r.channel.id for r in plan.routes] == [2, 1]


def test_weights_share_the_first_place_inside_a_tier():
    selector = Selector(random.Random(7))
    firsts = Counter(selector.plan((channel(1, weight=3), channel(2, weight=1)), "m").routes[0].channel.id for _ in range(4000))
    assert 0.70 < firsts[1] / 4000 < 0.80  # 3:1


def test_weight_zero_is_a_last_resort_in_its_tier():
    selector = Selector(random.Random(3))
    for _ in range(50):
        plan = selector.plan((channel(1, weight=0), channel(2, weight=1)), "m")
        assert [r.channel.id for r in plan.routes] == [2, 1]


def test_keys_rotate_round_robin_across_requests():
    selector = Selector(random.Random(0))
    ch = channel(1, keys=3)
    firsts = [selector.plan((ch,), "m").routes[0].key.id for _ in range(6)]
    assert firsts == [100, 101, 102, 100, 101, 102]
    selector.plan((ch,), "m")
    assert [r.key.id for r in selector.plan((ch,), "m").routes] == [101, 102, 100]  # the rest follow, wrapped


def test_random_key_selection_is_a_channel_setting():
    selector = Selector(random.Random(5))
    ch = channel(1, keys=4, config=parse_config("openai", {"key_selection": "random"}))
    firsts = Counter(selector.plan((ch,), "m").routes[0].key.id for _ in range(400))
    assert set(firsts) == {100, 101, 102, 103} and max(firsts.values()) < 160


def test_disabled_keys_and_keyless_channels_are_left_out_and_said_why():
    keys = (ChannelKeyView(id=1, secret="a", status=Status.DISABLED), ChannelKeyView(id=2, secret="b", status=Status.AUTO_DISABLED))
    dead = ChannelView(id=9, name="dead", type="openai", base_url="http://x", models=("m",), keys=keys)
    plan = Selector().plan((dead, channel(1)), "m", supports=lambda c: True)
    assert [r.ids for r in plan.routes] == [(1, 100)]
    assert plan.skipped == ((9, "no_enabled_key"),)
    assert [c.id for c in plan.channels] == [1]


def test_a_channel_type_that_cannot_do_the_endpoint_is_skipped():
    plan = Selector().plan((channel(1), channel(2)), "m", supports=lambda c: c.id == 2)
    assert [r.channel.id for r in plan.routes] == [2] and plan.skipped == ((1, "unsupported_endpoint"),)


def test_many_keys_are_offered_a_few_at_a_time():
    plan = Selector().plan((channel(1, keys=40),), "m")
    assert len(plan.routes) == KEYS_PER_CHANNEL


def test_model_mapping_names_the_upstream_model():
    mapped = channel(1, model_map={"public": "vendor-model-v2"})
    assert Selector().plan((mapped,), "public").routes[0].upstream_model == "vendor-model-v2"


def test_after_a_channel_fails_as_a_whole_its_other_keys_go_last():
    plan = Selector(random.Random(0)).plan((channel(1, priority=5, keys=2), channel(2, keys=1)), "m")
    tried = [plan.routes[0].ids]
    assert [r.channel.id for r in remaining_routes(plan, tried, failed_channels={1})] == [2, 1]
    assert [r.channel.id for r in remaining_routes(plan, tried, failed_channels=set())] == [1, 2]
