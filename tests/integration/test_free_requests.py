"""A request that costs nothing (a model priced at zero) holds 0 µ$; settling it must still queue
its usage event, or the request never reaches the request log."""
from __future__ import annotations

import time


from relay.quota import Quota
from relay.usage import USAGE_STREAMS, UsageEvent


def test_a_zero_hold_settles_and_queues_its_usage_event(redis_client):
    quota = Quota(redis_client)
    quota.seed_account(1, 1_000)
    hold = quota.hold("free-1", 1, 10, 0, None, time.time() + 60)
    event = UsageEvent(request_id="free-1", started_at=0, finished_at=0, endpoint="/v1/moderations", status=200).encode()
    assert quota.settle(hold, 0, event) == 0
    assert redis_client.xlen(USAGE_STREAMS[0]) == 1
