"""Errors the relay answers with, in the caller's format: OpenAI's, Anthropic's on
the Anthropic endpoints, Google's on the Gemini endpoints.

A `RelayError` carries everything needed to render the response; `ErrorKind` is what an adapter
concludes about an upstream failure, for routing and health to act on.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson


class ErrorKind(str, enum.Enum):
    AUTH = "auth"  # the operator's upstream key is invalid or deactivated
    PERMISSION = "permission"  # the upstream refuses this key this model or region (403): the key may serve others
    QUOTA = "quota"  # the upstream account's billing quota is exhausted
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    BAD_REQUEST = "bad_request"  # the caller's request is at fault
    CONTENT_POLICY = "content_policy"
    NOT_FOUND = "not_found"  # the upstream does not know the model or endpoint
    TRANSIENT = "transient"  # 5xx and other passing upstream faults
    TIMEOUT = "timeout"
    CONNECT = "connect"
    INVALID_RESPONSE = "invalid_response"


# Failures the caller caused: never retried, never held against a channel.
CLIENT_KINDS = frozenset({ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_POLICY})


@dataclass(frozen=True, slots=True)
class UpstreamError:
    kind: ErrorKind
    status: int  # the upstream's HTTP status, 0 when none arrived
    message: str
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind not in CLIENT_KINDS


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    501: "not_implemented_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# Google's canonical status names by HTTP status (google.rpc.Code); the SDKs read `status`.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

OPENAI = "openai"
ANTHROPIC = "anthropic"
GEMINI = "gemini"
# A Gemini stream framed as one JSON array (streamGenerateContent without alt=sse): an error that
# ends it mid-way is the array's last element, and closes it.
GEMINI_ARRAY = "gemini-array"


class RelayError(Exception):
    """An error answered to the caller. `code` is the machine-readable reason (request logs keep it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type or _TYPES.get(status, "api_error")
        self.retry_after = retry_after

    def openai_body(self, request_id: str) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": f"{self.message} (request id: {request_id})",
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def anthropic_body(self, request_id: str) -> bytes:
        return orjson.dumps(
            {
                "type": "error",
                "error": {"type": _ANTHROPIC_TYPES.get(self.status, "api_error"), "message": f"{self.message} (request id: {request_id})"},
                "request_id": request_id,
            }
        )

    def gemini_body(self, request_id: str) -> bytes:
        """Google's error shape; the relay's own code rides in an ErrorInfo detail, a retry delay in
        RetryInfo (where Google's SDKs and the Gemini CLI look for one)."""
        details: list[dict[str, Any]] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": self.code.upper(),
                                "domain": "switchboard", "metadata": {"request_id": request_id}}]
        if self.retry_after:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{max(1, round(self.retry_after))}s"})
        status = _GOOGLE_STATUS.get(self.status) or ("INTERNAL" if self.status >= 500 else "FAILED_PRECONDITION")
        return orjson.dumps({"error": {"code": self.status, "message": f"{self.message} (request id: {request_id})", "status": status,
                                       "details": details}})

    def body(self, request_id: str, error_format: str = OPENAI) -> bytes:
        if error_format == ANTHROPIC:
            return self.anthropic_body(request_id)
        if error_format in (GEMINI, GEMINI_ARRAY):
            return self.gemini_body(request_id)
        return self.openai_body(request_id)

    def sse_event(self, request_id: str, error_format: str = OPENAI) -> bytes:
        if error_format == ANTHROPIC:
            return b"event: error\ndata: " + self.anthropic_body(request_id) + b"\n\n"
        if error_format == GEMINI:
            return b"data: " + self.gemini_body(request_id) + b"\r\n\r\n"
        if error_format == GEMINI_ARRAY:
            return b",\r\n" + self.gemini_body(request_id) + b"]"
        return b"data: " + self.openai_body(request_id) + b"\n\n"


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> RelayError:
    return RelayError(400, code, message, param=param)


def upstream_failure(error: UpstreamError) -> RelayError:
    """What the caller sees when every attempt failed with `error` (the last one).

    The operator's own upstream trouble (dead key, exhausted quota) must never look like the
    caller's fault, so those become 503 "no channel available".
    """
    kind = error.kind
    if kind in (ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_POLICY):
        return RelayError(400, "content_policy_violation" if kind is ErrorKind.CONTENT_POLICY else "upstream_rejected_request", error.message)
    if kind is ErrorKind.RATE_LIMIT or kind is ErrorKind.OVERLOADED:
        return RelayError(429, "upstream_rate_limited", "The upstream provider is at capacity; retry shortly.", retry_after=error.retry_after or 1)
    if kind is ErrorKind.TIMEOUT:
        return RelayError(504, "upstream_timeout", "The upstream provider did not answer in time.")
    if kind is ErrorKind.INVALID_RESPONSE:
        return RelayError(502, "upstream_invalid_response", "The upstream provider returned an invalid response.")
    if kind in (ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.NOT_FOUND, ErrorKind.PERMISSION):
        return RelayError(503, "no_channel_available", "No upstream channel is available for this model right now.")
    return RelayError(502, "upstream_error", "The upstream provider failed to answer.")
