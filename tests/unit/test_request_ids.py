"""Request ids: the same shape as before (`req_` and 24 hex digits), ordered by when the request
started, so that a batch of them lands together in the indexes on request ids."""
from __future__ import annotations

import re

from relay.context import new_request_id, request_id_at


def test_ids_keep_their_shape_and_do_not_repeat():
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_sort_by_the_millisecond_their_request_started():
    started = 1_796_000_000.0
    later = [request_id_at(started + ms / 1000, bits) for ms, bits in ((0, 2**48 - 1), (1, 0), (2, 5), (60_000, 1))]
    assert later == sorted(later)
    assert request_id_at(started, 0)[4:16] == f"{int(started * 1000):012x}"
