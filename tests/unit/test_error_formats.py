"""Errors in the caller's format: OpenAI's everywhere, Anthropic's on the Anthropic endpoints and
for model listings asked for with anthropic-version; both carry the request id, as JSON and as SSE."""
from __future__ import annotations

import orjson
import pytest

from relay.errors import ANTHROPIC, OPENAI, RelayError
from relay.server import error_format_for


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
                                         (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"),
                                         (500, "api_error"), (501, "api_error"), (502, "api_error"), (504, "timeout_error")])
def test_anthropic_error_bodies(status, kind):
    body = orjson.loads(RelayError(status, "code", "Went wrong.").body("req_1", ANTHROPIC))
    assert body == {"type": "error", "error": {"type": kind, "message": "Went wrong. (request id: req_1)"}, "request_id": "req_1"}


def test_openai_error_bodies_are_unchanged():
    body = orjson.loads(RelayError(400, "bad", "Nope.", param="model").body("req_1", OPENAI))
    assert body == {"error": {"message": "Nope. (request id: req_1)", "type": "invalid_request_error", "param": "model", "code": "bad"}}


def test_stream_errors_in_each_format():
    error = RelayError(502, "upstream_stream_interrupted", "Cut.")
    assert error.sse_event("r", OPENAI).startswith(b"data: {\"error\"")
    anthropic_event = error.sse_event("r", ANTHROPIC)
    assert anthropic_event.startswith(b"event: error\ndata: ") and anthropic_event.endswith(b"\n\n")


@pytest.mark.parametrize("method,path,headers,expected", [
    ("POST", "/v1/messages", {}, ANTHROPIC),
    ("GET", "/v1/messages", {}, ANTHROPIC),  # a 405 on an Anthropic path
    ("POST", "/v1/messages/count_tokens", {}, ANTHROPIC),
    ("POST", "/v1/chat/completions", {"HTTP_ANTHROPIC_VERSION": "2023-06-01"}, OPENAI),
    ("GET", "/v1/models", {"HTTP_ANTHROPIC_VERSION": "2023-06-01"}, ANTHROPIC),
    ("GET", "/v1/models", {}, OPENAI),
])
def test_which_format_a_caller_gets(method, path, headers, expected):
    assert error_format_for(method, path, headers) == expected
