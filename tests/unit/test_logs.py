"""Log output: SWITCHBOARD_LOG_FORMAT picks text or JSON; the request being answered names itself on
every record, each greenlet its own."""
from __future__ import annotations

import io
import logging

import gevent
import orjson
import pytest

from relay import logs
from relay.logs import REQUEST_ID


@pytest.fixture
def captured():
    """The root logger configured as a process would be, writing into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buffer = io.StringIO()

    def configure(**env: str) -> io.StringIO:
        logs.configure(environ=env)
        root.handlers[0].stream = buffer  # type: ignore[attr-defined]
        return buffer

    outside = REQUEST_ID.set(None)  # a test before may have answered a request in this thread
    yield configure
    REQUEST_ID.reset(outside)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_the_request_id_extra_fields_and_the_traceback(captured):
    out = captured(SWITCHBOARD_LOG_FORMAT="json")
    log = logging.getLogger("relay.test")
    token = REQUEST_ID.set("req_abc")
    try:
        log.warning("charge of %s cut", "req_abc", extra={"account_id": 7})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("settle failed")
    finally:
        REQUEST_ID.reset(token)
    log.info("outside any request")
    first, second, third = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "relay.test" and first["message"] == "charge of req_abc cut"
    assert first["request_id"] == "req_abc" and first["account_id"] == 7 and first["time"].endswith("Z")
    assert second["request_id"] == "req_abc" and "ValueError: boom" in second["exception"]
    assert "request_id" not in third


def test_text_is_the_default_and_names_the_request(captured):
    out = captured()
    token = REQUEST_ID.set("req_xyz")
    logging.getLogger("relay.test").warning("something")
    REQUEST_ID.reset(token)
    assert " WARNING [req_xyz] relay.test: something" in out.getvalue()


def test_each_greenlet_logs_its_own_request(captured):
    out = captured(SWITCHBOARD_LOG_FORMAT="json")
    log = logging.getLogger("relay.test")

    def answer(request_id: str) -> None:
        REQUEST_ID.set(request_id)
        gevent.sleep(0.01)  # the other request runs meanwhile
        log.warning("answered %s", request_id)

    gevent.joinall([gevent.spawn(answer, "req_one"), gevent.spawn(answer, "req_two")])
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((entry["message"], entry["request_id"]) for entry in lines) == [("answered req_one", "req_one"), ("answered req_two", "req_two")]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="SWITCHBOARD_LOG_FORMAT"):
        logs.formatter({"SWITCHBOARD_LOG_FORMAT": "xml"})
