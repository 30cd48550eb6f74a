"""Concurrent calls of one per-request script, sent to Redis together.

Every call of a script costs Redis a fixed share beyond the script's own work: reading the command
off its socket, the event loop's wake-up, entering Lua, writing the reply. Under load many requests
of a relay process want the same script at once, so `BatchedScript` sends them as one call: while
`in_flight` batches are on their way, later callers queue, and the first of them sends everyone
queued (up to `max_batch`) when a batch comes back. An idle relay sends each call at once, alone, so
batching never adds a wait; a busy one pays one Redis round trip for many requests.

In Redis the batch runs each call's body in turn, as if each were its own script: `batch_lua` wraps
the body in a loop that hands each call its own KEYS and ARGV (the argument readers of
relay/health.py's ARG_READER_LUA start again at each call) and returns one reply per call. An error
inside one call's body is that call's error only (`pcall`); what the body wrote before it failed
stays written, exactly as when the body ran alone.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from redis.exceptions import ResponseError

from relay.resp import ReplyLost

# A call's reply that is the error its body raised: the marker, then the message.
_ERROR = "__batch_error__"


def batch_lua(definitions: str, *bodies: str) -> str:
    """The batch script of per-call scripts made of shared `definitions` (ARG_READER_LUA first) and
    `bodies` (what runs per call, ending in its reply), which read their arguments through the
    readers only: the batch's ARGV holds every call's. With several bodies, each call's first
    argument is the number (from 1) of the body it runs, so that calls of different kinds share one
    batch."""
    functions = "".join(f"local function call_{n}(KEYS)\n{body}\nend\n" for n, body in enumerate(bodies, 1))
    table = "local BODIES = {" + ", ".join(f"call_{n}" for n in range(1, len(bodies) + 1)) + "}\n"
    choose = "local body, skip = call_1, 0" if len(bodies) == 1 else "local body, skip = BODIES[tonumber(ARGV[ap + 1])], 1"
    return definitions + functions + table + r"""
local out, kp, ap = {}, 0, 1
for j = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[ap + 1]), tonumber(ARGV[ap + 2])
  ap = ap + 2
  local ck = {}
  for i = 1, nk do ck[i] = KEYS[kp + i] end
  """ + choose + r"""
  -- The readers take this call's arguments where they lie (ARGV from ap + 1 on), uncopied.
  A, K, pos, kpos = ARGV, ck, ap + skip, 0
  kp, ap = kp + nk, ap + na
  local ok, reply = pcall(body, ck)
  if not ok then
    if type(reply) == 'table' and reply.err then reply = reply.err end
    reply = {'""" + _ERROR + r"""', tostring(reply)}
  elseif reply == nil then
    reply = false
  end
  out[j] = reply
end
return out
"""


def batch_args(calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> tuple[list[Any], list[Any]]:
    """The batch script's KEYS and ARGV for `calls` of (keys, args)."""
    keys: list[Any] = []
    args: list[Any] = [len(calls)]
    for call_keys, call_args in calls:
        keys += call_keys
        args += [len(call_keys), len(call_args), *call_args]
    return keys, args


@dataclass(slots=True, eq=False)
class _Call:
    keys: Sequence[Any]
    args: Sequence[Any]
    done: threading.Event | None = None
    lead: list[_Call] | None = None  # set when this caller is to send these queued calls
    reply: Any = None
    error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise _copy(self.error)
        if isinstance(self.reply, list) and len(self.reply) == 2 and self.reply[0] in (_ERROR.encode(), _ERROR):
            message = self.reply[1]
            raise ResponseError(message.decode() if isinstance(message, bytes) else str(message))
        return self.reply


def _copy(error: BaseException) -> BaseException:
    """One failed batch fails each of its callers: each raises its own exception object, so that
    tracebacks of concurrent callers do not pile onto one."""
    try:
        return type(error)(*error.args)
    except Exception:
        return error


class BatchedScript:
    """`script(keys=..., args=...)` like a registered script; concurrent calls share round trips.

    `run(keys, args)` runs the batch script (relay/resp.py's `Script` or redis-py's). Locks and
    events come from `threading` at call time: gevent's in the relay process (monkey-patched),
    real threads in tests that run the relay in-process."""

    def __init__(self, run: Callable[..., Any], max_batch: int = 32, in_flight: int = 2,
                 slot_of: Callable[[Sequence[Any]], Hashable] | None = None):
        """`slot_of(keys)`: where a call's keys live, when calls may live in different places (a
        cluster's slots). A batch then runs as one call of the batch script per place, all sent at
        once: pipelined per node through `run.many` (relay/resp.py's `Script`), or in turn."""
        self.run = run
        self.slot_of = slot_of
        self.run_many: Callable[[list[tuple[list[Any], list[Any]]]], list[Any]] | None = getattr(run, "many", None)
        self.max_batch = max(1, max_batch)
        self.in_flight_limit = max(1, in_flight)
        self.in_flight = 0
        self.queue: deque[_Call] = deque()
        self.lock = threading.Lock()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        call = _Call(keys, args)
        batch = [call]
        done: threading.Event | None = None
        with self.lock:
            if self.in_flight < self.in_flight_limit and not self.queue:
                self.in_flight += 1
            else:
                call.done = done = threading.Event()
                self.queue.append(call)
        if done is not None:
            done.wait()
            if call.lead is None:
                return call.outcome()
            # Taken out of the call so that the call and its batch form no cycle: the relay collects
            # its oldest garbage generation rarely (relay/processes.py), and cycles would pile up.
            batch, call.lead = call.lead, None
        self._send(batch, call)
        return call.outcome()

    def _send_by_slot(self, batch: list[_Call], slot_of: Callable[[Sequence[Any]], Hashable]) -> None:
        groups: dict[Hashable, list[_Call]] = {}
        for c in batch:
            groups.setdefault(slot_of(c.keys), []).append(c)
        calls = [batch_args([(c.keys, c.args) for c in group]) for group in groups.values()]
        if self.run_many is not None:
            outcomes = self.run_many(calls)
        else:
            outcomes = []
            for keys, args in calls:
                try:
                    outcomes.append(self.run(keys=keys, args=args))
                except Exception as error:
                    outcomes.append(error)
        for group, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                outcome = outcome.with_traceback(None)
                for c in group:
                    c.error = outcome
            else:
                for c, reply in zip(group, outcome, strict=True):
                    c.reply = reply

    def _send(self, batch: list[_Call], sender: _Call) -> None:
        try:
            if self.slot_of is None:
                keys, args = batch_args([(c.keys, c.args) for c in batch])
                replies = self.run(keys=keys, args=args)
                for c, reply in zip(batch, replies, strict=True):
                    c.reply = reply
            else:
                self._send_by_slot(batch, self.slot_of)
        except Exception as error:
            # Without its traceback: that holds this frame, whose batch holds the calls (a cycle).
            error = error.with_traceback(None)
            for c in batch:
                c.error = error
        except BaseException:
            # The sender itself was stopped (its greenlet killed, a timeout): the others cannot know
            # whether Redis ran their calls, which is what a lost reply means to them.
            for c in batch:
                if c is not sender:
                    c.error = ReplyLost("the call that carried this one was interrupted before its reply")
            raise
        finally:
            # The sender's slot goes to the first caller that queued meanwhile, with everyone queued.
            with self.lock:
                successor: _Call | None = None
                if self.queue:
                    taken = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
                    successor = taken[0]
                    successor.lead = taken
                else:
                    self.in_flight -= 1
            for c in batch:
                if c.done is not None:
                    c.done.set()
            if successor is not None and successor.done is not None:
                successor.done.set()
