"""The settle journal's abandoned-admission lines: written and read back, and read as older
versions wrote them, or damaged."""
from __future__ import annotations

import pytest

from relay.journal import Abandoned, decode_line


def test_an_abandoned_admission_reads_back_as_written_with_its_slots():
    line = Abandoned("req_1", 7, "sb:idem:9:ab", ("sb:lim:k:9:cc", "sb:lim:c:5:cc"))
    assert decode_line(line.encode()) == line
    assert decode_line(Abandoned("req_2", 3).encode()) == Abandoned("req_2", 3)  # no claim, no slots: neither written


@pytest.mark.parametrize("raw, read", [
    (b'{"rid": "req_old", "abandoned": true}', Abandoned("req_old", 0)),  # before holds were kept by bucket
    (b'{"rid": "req_c", "acct": 4, "abandoned": true, "claim": "sb:idem:1:x"}', Abandoned("req_c", 4, "sb:idem:1:x")),  # before slots
    (b'{"rid": "req_b", "acct": 4, "abandoned": true, "leases": "sb:lim:k:1:cc"}', Abandoned("req_b", 4)),  # not a list: no slots
    (b'{"rid": "req_m", "acct": 4, "abandoned": true, "leases": ["sb:lim:k:1:cc", 5, null]}', Abandoned("req_m", 4, "", ("sb:lim:k:1:cc",))),
])
def test_older_and_damaged_lines_still_release_what_they_can(raw, read):
    assert decode_line(raw) == read


def test_a_line_cut_short_is_unreadable():
    with pytest.raises(ValueError):
        decode_line(b'{"rid": "req_x", "acct": 4, "aband')
