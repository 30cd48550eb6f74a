"""Idempotent retries: a billed POST sent with `Idempotency-Key` runs once per key and body.

The claim rides in the admit script (relay/admission.py): a key seen before answers there — the
recorded outcome, "still in progress" or "used with another body" — before any limit, route or hold
is looked at, and a new key is marked in progress in the same script only when the hold is taken.
A request without the header pays nothing; with it, one more round trip at the end writes (or
releases) the record.

What is recorded (docs/api.md, "Idempotent retries"):
- a 200 answer: status, headers and body; a stream's bytes as they went to the caller, up to
  `idempotency_max_bytes` — beyond that the record says so, and a replay is refused with 409
  rather than cut short (the request was still charged once);
- the upstream's refusal of the request itself (4xx, e.g. a content-policy rejection), as answered.

What is released, so a retry runs again: failures on our or the upstream's side (5xx, 429, timeouts)
and streams that did not end cleanly (the upstream failing mid-way, the caller hanging up). None of
these was charged beyond what reached the caller, so running again cannot charge twice for one answer.

The in-progress marker expires with the request's deadline (`lease_seconds`), so a relay that dies
mid-request blocks its key only until then.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from relay import redis_keys
from relay.context import Response
from relay.errors import RelayError

if TYPE_CHECKING:
    from relay.billing import Charge
    from relay.context import RequestContext

log = logging.getLogger(__name__)

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255
REPLAYED = ("Idempotent-Replayed", "true")

RUNNING, DONE, TOO_LARGE = "running", "done", "too_large"

# Shared with the admit script: the look-up that may answer at once, and the in-progress mark.
# A record is a hash: fp (body fingerprint), state, rid (the request that owns it), and once
# finished status, headers (JSON list of pairs), body.
CLAIM_LUA = r"""
local function idem_prior(key, fp)
  local rec = redis.call('HMGET', key, 'fp', 'state', 'status', 'headers', 'body', 'rid')
  if not rec[1] then return nil end
  if rec[1] ~= fp then return {'idem', 'reused'} end
  if rec[2] == 'running' then return {'idem', 'running'} end
  return {'idem', rec[2], rec[3], rec[4], rec[5] or '', rec[6]}
end

local function idem_mark(key, fp, ttl, rid)
  redis.call('HSET', key, 'fp', fp, 'state', 'running', 'rid', rid)
  redis.call('EXPIRE', key, ttl)
end
"""

# Finishing: only the request that owns the record may write or release it (an in-progress mark
# that expired may already belong to a later request). KEYS: the record. ARGV: the request id,
# 'release' | 'keep', then what is kept.
FINISH_LUA = r"""
if redis.call('HGET', KEYS[1], 'rid') ~= ARGV[1] then return 0 end
if ARGV[2] == 'release' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'status', ARGV[5], 'headers', ARGV[6], 'body', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's idempotency key, resolved: where its record lives and what its body was."""

    redis_key: str
    fingerprint: str
    running_ttl: int  # seconds the in-progress mark outlives a relay that died holding it

    def admit_args(self) -> list[Any]:
        return [self.fingerprint, self.running_ttl]


@dataclass(frozen=True, slots=True)
class PriorOutcome:
    state: str  # running | reused | done | too_large
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    request_id: str | None = None


class Prior(Exception):
    """The admit script found the key: answer from the record instead of running the request."""

    def __init__(self, outcome: PriorOutcome):
        super().__init__(outcome.state)
        self.outcome = outcome


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def prior_from_reply(reply: list[Any]) -> Prior:
    """The admit script's {'idem', state, status, headers, body, rid} reply (the body stays bytes)."""
    state = _text(reply[1])
    if state in (RUNNING, "reused"):
        return Prior(PriorOutcome(state))
    headers = tuple((str(k), str(v)) for k, v in orjson.loads(reply[3] or b"[]"))
    body = reply[4] if isinstance(reply[4], bytes) else str(reply[4] or "").encode()
    return Prior(PriorOutcome(state, int(reply[2] or 0), headers, body, _text(reply[5]) if reply[5] else None))


def invalid_key() -> RelayError:
    return RelayError(400, "invalid_idempotency_key", f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")


def fingerprint(environ: dict[str, Any], body: bytes) -> str:
    """The request as far as replay is concerned: method, path, query and body. A multipart body's
    boundary is left out: SDKs draw a new one for each retry of the same upload."""
    digest = hashlib.sha256()
    digest.update(f"{environ.get('REQUEST_METHOD', 'POST')} {environ.get('PATH_INFO', '')}?{environ.get('QUERY_STRING', '')}\n".encode())
    content_type = environ.get("CONTENT_TYPE") or ""
    if content_type.startswith("multipart/"):
        found = _BOUNDARY.search(content_type)
        if found:
            body = body.replace(found.group(1).encode("latin-1"), b"")
    digest.update(body)
    return digest.hexdigest()


def claim_of(environ: dict[str, Any], account_id: int, key_id: int, body: bytes, running_ttl: float) -> Claim | None:
    """None without the header (the common case: one dict look-up); 400 for a malformed key."""
    raw = environ.get(HEADER)
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_LENGTH or not (raw.isascii() and raw.isprintable()):
        raise invalid_key()
    # Hashed: the Redis key's length is bounded whatever the caller's key looks like.
    name = hashlib.sha256(raw.encode()).hexdigest()
    return Claim(redis_keys.idempotency_key(account_id, key_id, name), fingerprint(environ, body), int(running_ttl) + 1)


class Idempotency:
    """Replays recorded outcomes and records new ones (one round trip each time a request finishes)."""

    def __init__(self, register: Callable[[str], Callable[..., Any]], ttl_seconds: int, max_bytes: int) -> None:
        self._finish = register(FINISH_LUA)
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes

    # --- a key seen before ----------------------------------------------------------------------
    def replay(self, ctx: RequestContext, prior: Prior) -> Response:
        outcome = prior.outcome
        if outcome.state == RUNNING:
            raise RelayError(409, "idempotency_in_progress", "A request with this Idempotency-Key is still in progress; "
                             "retry once it has finished to receive its outcome.", type="idempotency_error", retry_after=1)
        if outcome.state == "reused":
            raise RelayError(409, "idempotency_key_reused", "This Idempotency-Key was already used for a different request "
                             "(another body or endpoint); use a new key for a new request.", type="idempotency_error")
        if outcome.state == TOO_LARGE:
            raise RelayError(409, "idempotency_replay_unavailable", f"The request with this Idempotency-Key finished and was "
                             f"charged once, but its response was larger than the {self.max_bytes}-byte replay limit, so it "
                             f"cannot be replayed; GET /v1/generation?id={outcome.request_id} reports its usage and cost.",
                             type="idempotency_error")
        if outcome.request_id:
            ctx.request_id = outcome.request_id  # the caller sees the id of the request that was charged
        return Response(outcome.status, [*outcome.headers, REPLAYED], [outcome.body])

    # --- a new key, once its request has an outcome ------------------------------------------------
    def keep(self, claim: Claim, ctx: RequestContext, response: Response, charge: Charge) -> Response:
        """Record a 200 answer; a stream is recorded as it passes and kept once it ended cleanly."""
        if isinstance(response.body, list):
            self._safely(self._record, claim, ctx.request_id, response.status, response.headers, b"".join(response.body))
            return response
        return Response(response.status, response.headers, RecordingBody(self, claim, ctx.request_id, response, charge))

    def failed(self, claim: Claim, request_id: str, error: BaseException, body: bytes) -> None:
        """The request ended with an error before anything was sent: the upstream's refusal of the
        request itself is the outcome of this body and is kept; any other failure is released."""
        if isinstance(error, RelayError) and 400 <= error.status < 500 and error.status != 429:
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            self._safely(self._record, claim, request_id, error.status, headers, body)
        else:
            self._safely(self.release, claim, request_id)

    @staticmethod
    def _safely(write: Callable[..., None], claim: Claim, request_id: str, *args: Any) -> None:
        """A record that cannot be written must not cost the caller its answer: the in-progress
        mark then expires with the request's deadline and a retry runs again."""
        try:
            write(claim, request_id, *args)
        except Exception:
            log.exception("could not record the outcome of %s", request_id)

    def release(self, claim: Claim, request_id: str) -> None:
        self._finish(keys=[claim.redis_key], args=[request_id, "release"])

    def _record(self, claim: Claim, request_id: str, status: int, headers: Iterable[tuple[str, str]], body: bytes | None) -> None:
        kept = body is not None and len(body) <= self.max_bytes
        state = DONE if kept else TOO_LARGE
        self._finish(keys=[claim.redis_key], args=[request_id, "keep", self.ttl_seconds, state, status,
                                                     orjson.dumps([list(h) for h in headers]), body if kept else b""])


class RecordingBody:
    """A streamed body that keeps a copy of every byte handed to the caller, up to the cap, and
    writes the record when the body is closed (the server closes every body, finished or not)."""

    def __init__(self, keeper: Idempotency, claim: Claim, request_id: str, response: Response, charge: Charge) -> None:
        self.keeper, self.claim, self.request_id = keeper, claim, request_id
        self.inner = response.body
        self.status, self.headers = response.status, response.headers
        self.charge = charge  # read only: how the request ended
        self.parts: list[bytes] | None = []
        self.size = 0
        self.closed = False

    def _keep(self, data: bytes) -> None:
        if self.parts is None or not data:
            return
        self.size += len(data)
        if self.size > self.keeper.max_bytes:
            self.parts = None  # over the cap: the record will say so
        else:
            self.parts.append(data)

    def __iter__(self) -> Iterator[bytes]:
        for data in self.inner:
            self._keep(data)
            yield data

    def write_to(self, sock: Any, head: bytes, frame: Callable[[bytes], bytes], last: bytes) -> None:
        """The server's pumped path (relay/streaming.py): every piece goes through `frame` on its way out."""
        def recording_frame(data: bytes) -> bytes:
            self._keep(data)
            return frame(data)

        # keep() wraps only streamed bodies (relay/streaming.py's StreamBody); a list is recorded at once
        self.inner.write_to(sock, head, recording_frame, last)  # type: ignore[attr-defined]  # a StreamBody, see above

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
        if self.charge.settled and self.charge.status == 200:
            body = b"".join(self.parts) if self.parts is not None else None
            self.keeper._safely(self.keeper._record, self.claim, self.request_id, self.status, self.headers, body)
        else:
            self.keeper._safely(self.keeper.release, self.claim, self.request_id)
