"""Admit, fail over and settle as a call on each slot they touch: the path of a Redis Cluster with
the money spread over buckets (relay/redis_keys.py), where every script call's keys must share a
slot.

Admit is the money call on the account's bucket (idempotency claim, the API key's limits, the hold,
the pin read), a call per user/group scope with limits and for the capacity queue's gate (only when
configured), then the channels in plan order, one call each, until one takes the request; a refusal
after the money call undoes what was taken. Settle is the money call (charge, the key's limits, the
pin written), then the same scopes' and the used channel's. What one script judged over every
channel is judged here: Envoy's panic from the ejections this process has seen, the pin's tier,
the network (relay/health.py's NetworkWatch). docs/redis.md counts the calls.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from relay import redis_keys
from relay.admission_calls import (Admission, NoRoute, answer, lease_keys, plan_args, plan_keys, scope_args, scope_keys, text)
from relay.admission_scripts import (ADMIT_MONEY_CALL, ADMIT_UNDO_CALL, CHANNEL_PICK_CALL, CHANNEL_SETTLE_CALL, QUEUE_GATE_CALL,
                                     QUEUE_SERVED_CALL, SCOPES_FINISH_CALL, SCOPES_TAKE_CALL, SCOPES_UNDO_CALL, SETTLE_MONEY_CALL)
from relay.affinity import Affinity
from relay.capacity_queue import BEAT_SECONDS, HEAD_POLL_SECONDS, Queued, QueueSpot
from relay.health import NO_OUTCOME_ARGS, Effect, HealthPolicy, NetworkWatch, Outcome, report_dead
from relay.limits import Scope
from relay.quota import Hold
from relay.resp import key_slot_of
from relay.script_batch import BatchedScript
from relay.selector import Plan, Route

if TYPE_CHECKING:
    from redis import Redis

    from relay.snapshot import ChannelView

log = logging.getLogger(__name__)

QUEUE_QUIET_SECONDS = HEAD_POLL_SECONDS


def _first_key_slot(keys: Sequence[Any]) -> int:
    return key_slot_of(keys[0])


def _by_prefix(scopes: Iterable[Scope]) -> list[tuple[Scope, ...]]:
    """Scopes grouped by their keys' prefix (one slot each), in first-seen order."""
    groups: dict[str, list[Scope]] = {}
    for s in scopes:
        groups.setdefault(s.prefix, []).append(s)
    return [tuple(g) for g in groups.values()]


def _runs(routes: list[Route], pinned: str | None) -> list[list[int]]:
    """The routes (by index) grouped into runs of one channel each, in the order to try them: the
    plan's, but with the pinned route first in its channel and its channel first among those of the
    same priority before it (a pin never outranks a higher tier, as in relay/affinity.py)."""
    runs: list[list[int]] = []
    for i, r in enumerate(routes):
        if runs and routes[runs[-1][0]].channel.id == r.channel.id:
            runs[-1].append(i)
        else:
            runs.append([i])
    hit = next((i for i, r in enumerate(routes) if str(r.key.id) == pinned), None) if pinned else None
    if hit is None:
        return runs
    at = next(n for n, run in enumerate(runs) if hit in run)
    runs[at].remove(hit)
    runs[at].insert(0, hit)
    tier = routes[hit].channel.priority
    start = at
    while start > 0 and routes[runs[start - 1][0]].channel.priority == tier:
        start -= 1
    runs.insert(start, runs.pop(at))
    return runs


class SplitGate:
    """relay/admission.py's Gate under a spread cluster: every call batches per master (one script
    carries every body, so a master's calls of every kind share a batch), a batch running as one
    call per slot among its calls, all in one pipeline. Per master, so that a master that hangs
    holds up the requests whose money or channels it keeps, and no others."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy, lease_seconds: float, script: Any, batch_size: int, batch_in_flight: int):
        self.redis = redis
        self.policy = policy
        self.lease_seconds = lease_seconds
        self._script = script
        self._batch_size, self._batch_in_flight = batch_size, batch_in_flight
        self._batches: dict[Any, BatchedScript] = {}  # per master
        # What this process has seen of channels' ejections (from every channel call's reply):
        # Envoy's panic judges the share of a model's channels ejected before the walk.
        self._ejected: dict[int, float] = {}
        self._network = NetworkWatch(policy.network_window_seconds)
        self._queues_quiet: dict[str, float] = {}  # a queue's name → when this process last found it empty
        # Where a hold goes that an admit made and could not undo (relay/billing.py's
        # `Charges.abandon`, set by the pipeline that owns both).
        self.strand: Callable[[str, int, str, tuple[str, ...]], None] | None = None

    def _call(self, keys: list[Any], args: list[Any]) -> Any:
        node_of = getattr(self._script, "node_of", None)
        node = node_of(keys[0]) if node_of is not None else None
        batches = self._batches.get(node)
        if batches is None:
            batches = self._batches.setdefault(node, BatchedScript(self._script, self._batch_size, self._batch_in_flight, slot_of=_first_key_slot))
        return batches(keys=keys, args=args)

    def admit(self, hold: Hold, key_limit: int | None, money_keys: list[Any], money_args: list[Any], claim_keys: list[str],
              scopes: tuple[Scope, ...], plan: Plan, affinity: Affinity | None, queue: QueueSpot | None, now: float) -> Admission:
        """The money call on the account's bucket (with the API key's limits and the pin), then one
        call for each other scope's slot and the queue's, then the channels in turn until one takes
        the request. A refusal (or a failure) after the money call undoes what was taken, so that a
        refusal still leaves nothing held."""
        rid, lease_end, routes = hold.request_id, now + self.lease_seconds, list(plan.routes)
        own = tuple(s for s in scopes if s.with_money)
        pin_keys = [affinity.redis_key] if affinity is not None else []
        reply = answer(self._call([*money_keys, *scope_keys(own, now), *pin_keys, *claim_keys],
                                   [ADMIT_MONEY_CALL, len(money_keys), *money_args, now, lease_end, *scope_args(own), 1 if pin_keys else 0]),
                        routes)
        reserved, pinned = int(reply[1]), (str(reply[2]) if affinity is not None else None)
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        taken: list[tuple[Scope, ...]] = []
        try:
            for side in _by_prefix(s for s in scopes if not s.with_money):
                answer(self._call(scope_keys(side, now), [SCOPES_TAKE_CALL, rid, now, lease_end, *scope_args(side)]), routes)
                taken.append(side)
            if queue is not None and (queue.ticket or not self._quiet(queue, now)):
                try:
                    answer(self._call(list(queue.keys), [QUEUE_GATE_CALL, queue.ticket, now, now + BEAT_SECONDS]), routes)
                except Queued:
                    self._queues_quiet.pop(queue.keys[0], None)
                    raise
                if not queue.ticket:
                    self._hush(queue, now)
            try:
                index, panic, skips, how = self._walk(plan, routes, rid, now, lease_end, pinned)
            except NoRoute:
                if queue is not None:  # full: this request may join the queue, so newcomers look again
                    self._queues_quiet.pop(queue.keys[0], None)
                raise
            if queue is not None and queue.ticket:
                try:
                    self._call(list(queue.keys), [QUEUE_SERVED_CALL, queue.ticket, now])
                except Exception:  # the ticket stops beating and is swept within seconds
                    log.exception("request %s took its route; its capacity queue ticket was not removed", rid)
        except BaseException as cause:  # a refusal, Redis failing, or this greenlet stopped between the calls
            self._give_back(hold, key_limit, claim_keys, own, taken, now, cause, lambda: lease_keys(scopes, plan))
            raise
        route = routes[index]
        return Admission(hold, scopes, plan, route, panic, skips, [route.ids], {route.attempt_key}, affinity, how)

    def _give_back(self, hold: Hold, key_limit: int | None, claim_keys: list[str], own: tuple[Scope, ...], taken: list[tuple[Scope, ...]],
                   now: float, cause: BaseException, leases: Callable[[], tuple[str, ...]]) -> None:
        """Undo an admission that `cause` stopped after its money call. When Redis refuses the undo
        (a cluster between a master's loss and its replica's promotion answers CLUSTERDOWN
        everywhere) the hold, the claim and every concurrency slot it may have taken (`leases()`) are
        journaled, and released once Redis answers, instead of waiting for their expiry; request
        counts taken lapse with their minute. The request then ends as Redis being
        unavailable: a refusal it could wait out (the capacity queue) would admit this request id
        again, and the journaled release would then free that new hold. A greenlet stopped (killed,
        timed out) stays stopped."""
        try:
            self._undo(hold, key_limit, claim_keys, own, taken, now)
        except BaseException as error:
            log.exception("could not release the hold of %s after its admission was stopped", hold.request_id)
            if self.strand is not None:
                self.strand(hold.request_id, hold.account_id, claim_keys[0] if claim_keys else "", leases())
            if not isinstance(error, Exception):
                raise  # stopped while undoing
            if not isinstance(cause, Exception):
                raise cause from error
            raise RedisConnectionError(f"Redis failed between the calls of an admission: {error}") from error

    def _undo(self, hold: Hold, key_limit: int | None, claim_keys: list[str], own: tuple[Scope, ...], taken: list[tuple[Scope, ...]],
              now: float) -> None:
        bucket = redis_keys.money_bucket(hold.account_id)
        scopes = [redis_keys.account_key(hold.account_id)]
        if key_limit is not None:
            scopes.append(redis_keys.api_key_key(hold.account_id, hold.key_id))
        scopes += [w for w, reserving in zip(hold.windows, hold.reserved, strict=True) if reserving]
        keys = [redis_keys.hold_key(bucket, hold.request_id), redis_keys.holds_key(bucket), *scopes, *scope_keys(own, now), *claim_keys]
        self._call(keys, [ADMIT_UNDO_CALL, hold.request_id, len(scopes), 1 if claim_keys else 0, *scope_args(own)])
        for side in taken:
            self._call(scope_keys(side, now), [SCOPES_UNDO_CALL, hold.request_id, *scope_args(side)])

    def _quiet(self, queue: QueueSpot, now: float) -> bool:
        """Whether this process found the queue empty within the last QUEUE_QUIET_SECONDS: a request
        that no queue holds up (no ticket) then skips its gate, the call a split admit would
        otherwise pay every time (groups queue by default). A newcomer may so pass a queue that
        another relay's request joined that long ago at most, a head's poll interval."""
        return 0 <= now - self._queues_quiet.get(queue.keys[0], -1.0) < QUEUE_QUIET_SECONDS

    def _hush(self, queue: QueueSpot, now: float) -> None:
        if len(self._queues_quiet) >= 10_000:  # one per model and its channels: a snapshot's worth
            self._queues_quiet.clear()
        self._queues_quiet[queue.keys[0]] = now

    def _panic(self, channels: tuple[ChannelView, ...], now: float) -> bool:
        return sum(1 for c in channels if self._ejected.get(c.id, 0.0) > now) * 2 > len(channels)

    def _saw(self, channel_id: int, ejected_until: float, now: float) -> None:
        if ejected_until > now:
            self._ejected[channel_id] = ejected_until
        else:
            self._ejected.pop(channel_id, None)

    def _walk(self, plan: Plan, routes: list[Route], rid: str, now: float, lease_end: float,
              pinned: str | None) -> tuple[int, bool, list[tuple[Route, str]], str]:
        """One call per channel, in turn, until one takes the request: (its route's index, panic,
        the routes skipped, how the pin fared). Raises NoRoute. The panic (more than half of the
        model's channels ejected) is judged from what this process has seen; once the walk itself
        shows it, the walk starts again in panic."""
        runs = _runs(routes, pinned)
        panic = self._panic(plan.channels, now)
        while True:
            skips: list[tuple[Route, str]] = []
            wait = 0
            for run in runs:
                channel = routes[run[0]].channel
                part = [routes[i] for i in run]
                reply = text(self._call(plan_keys((channel,), part, now),
                                         [CHANNEL_PICK_CALL, rid, now, lease_end, 1 if panic else 0, *plan_args((channel,), part)]))
                self._saw(channel.id, float(reply[2]), now)
                flat = reply[3:]
                skips += [(part[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
                if reply[0] == "ok":
                    index = run[int(reply[1]) - 1]
                    how = "" if pinned is None else "new" if pinned == "" else "kept" if str(routes[index].key.id) == pinned else "moved"
                    return index, panic, skips, how
                waits = int(reply[1])
                if waits > 0 and (wait == 0 or waits < wait):
                    wait = waits
                if not panic and self._panic(plan.channels, now):
                    break  # the channels seen ejected are more than half already: again, in panic
            else:
                raise NoRoute(wait, skips, panic)
            panic = True

    def _channel_settle(self, scopes: tuple[Scope, ...], outcome: Outcome | None, rid: str, tokens: int, now: float) -> list[Any]:
        """A route's part of a settle or a failover, under its channel's tag: the channel's and
        its key's limits given back, the outcome recorded in their health. Returns the record."""
        judged = outcome
        if outcome is not None and outcome.effect is Effect.OK:
            self._network.answered(now)
        elif outcome is not None and outcome.effect is Effect.FAILURE and outcome.network and not self._network.counts(outcome.channel_id, now):
            judged = None  # this relay's network, not the channel: not held against it
        keys = [*scope_keys(scopes, now), *(judged.keys(shared=False) if judged is not None else [])]
        outcome_args = NO_OUTCOME_ARGS if judged is None else [*judged.args(shared=False), *(self.policy.args() if judged.needs_policy else ())]
        record = text(self._call(keys, [CHANNEL_SETTLE_CALL, now, rid, tokens, *scope_args(scopes), *outcome_args]))[2:] if keys else []
        if judged is None:
            return ["not_counted", 0, 0] if outcome is not None else record
        if not record:  # nothing to record (a misroute, a client error) and no limits to give back
            return record
        if record[0] == "failure" and record[2]:  # 0: not ejected now, or already (a failure during an ejection is not counted)
            self._saw(judged.channel_id, float(record[2]), now)
        elif record[0] == "dead" and record[1] == 1:
            try:
                report_dead(self.redis, judged, now)
            except Exception:  # the dead mark stands; the key fails again after it lapses, and is reported then
                log.exception("key %s is dead; the report to disable it was not written", judged.key_id)
        return record

    def failover(self, admission: Admission, failed: Outcome, remaining: list[Route], now: float) -> tuple[int, int, list[Any]]:
        """The failed attempt recorded on its channel, then the walk over `remaining`: (the new
        route's number in `remaining` from 1, or 0; seconds to wait; the failure's health record)."""
        rid = admission.hold.request_id
        record = self._channel_settle(admission.route_scopes(), failed, rid, 0, now)
        try:
            index, admission.panic, admission.skips, _ = self._walk(admission.plan, remaining, rid, now, now + self.lease_seconds, None)
        except NoRoute as none:
            admission.panic, admission.skips = none.panic, none.skips
            return 0, none.retry_after, record
        return index + 1, 0, record

    def settle_split(self, admission: Admission, money_keys: list[Any], money_args: list[Any], gen_key: str, tokens: int,
                     outcome: Outcome | None, now: float) -> tuple[bool, list[Any], int]:
        """The money call first (the charge, the API key's limits, the pin); only when it settled
        now, the other scopes' and the channel's calls."""
        rid = admission.hold.request_id
        own = tuple(s for s in admission.scopes if s.with_money)
        affinity = admission.affinity
        pin_keys = [affinity.redis_key] if affinity is not None else []
        pin_args = [affinity.ttl, admission.route.key.id] if affinity is not None else [0]
        reply = text(self._call([*money_keys, *scope_keys(own, now), *pin_keys, gen_key],
                                 [SETTLE_MONEY_CALL, len(money_keys), *money_args, now, rid, tokens, *scope_args(own), *pin_args]))
        if reply[0] != 1:
            return False, [], 0
        charged = int(reply[1])
        try:
            for side in _by_prefix(s for s in admission.scopes if not s.with_money):
                self._call(scope_keys(side, now), [SCOPES_FINISH_CALL, rid, tokens, *scope_args(side)])
            record = self._channel_settle(admission.route_scopes(), outcome, rid, tokens, now)
        except Exception:
            # Charged already, which is what must happen once; the leases lapse by themselves.
            log.exception("request %s settled; its leases, tokens and health outcome were not recorded", rid)
            return True, [], charged
        return True, record, charged
