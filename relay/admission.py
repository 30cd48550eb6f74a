"""A request's Redis work: admit, and settle, plus a failover per retry.

On one Redis server (and on a cluster with the money unspread) each is one script call:

- `admit` (one Lua script): the caller's rate and concurrency limits, then the first route in the
  selector's order that is not ejected, cooling down, proven dead or at capacity, then the credit
  hold; only when all of that passes does it write anything (counters, leases, the hold, the route's
  capacity slot). A refusal leaves Redis as it was.
- `failover` (one script, only when an attempt failed before the first byte): record that failure in
  passive health, give back the failed route's capacity slot, take the next usable route's.
- `settle` (one script): the money settle (release the hold, charge, queue the usage event) and,
  only if that settle was the first, the leases given back, tokens counted, and the final attempt's
  outcome recorded in passive health — so a request is charged, counted and recorded exactly once.

The money parts are relay/quota.py's own scripts, embedded as Lua functions.

Split (Redis Cluster with the money spread over buckets; relay/redis_keys.py), each touches the
slots of what it touches, one call each, batched per master: admit is the money call on the
account's bucket (claim, the API key's limits, hold, the pin), a call per user/group scope with
limits and for the capacity queue (only when configured), then the channels in plan order, one call
each, until one takes the request; settle is the money call (charge, key limits, the pin), then the
same scopes' and the used channel's. docs/redis.md counts the calls.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from relay import idempotency, quota, redis_keys
from relay.admission_scripts import (ADMIT_CALL, ADMIT_MONEY_CALL, ADMIT_UNDO_CALL, CHANNEL_PICK_CALL, CHANNEL_SETTLE_CALL,
                                     FAILOVER, PER_REQUEST, QUEUE_GATE_CALL, QUEUE_SERVED_CALL, SCOPES_FINISH_CALL,
                                     SCOPES_TAKE_CALL, SCOPES_UNDO_CALL, SETTLE_CALL, SETTLE_MONEY_CALL, SPLIT_CALLS)
from relay.affinity import Affinity
from relay.affinity import lua_args as affinity_args
from relay.capacity_queue import BEAT_SECONDS, HEAD_POLL_SECONDS, Queued, QueueSpot
from relay.capacity_queue import admit_args as queue_args
from relay.health import NO_OUTCOME_ARGS, Effect, HealthPolicy, NetworkWatch, Outcome
from relay.limits import Scope, limit_keys
from relay.quota import Hold
from relay.resp import key_slot_of
from relay.script_batch import BatchedScript
from relay.selector import Plan, Route

if TYPE_CHECKING:
    from redis import Redis

    from relay.snapshot import ChannelView

log = logging.getLogger(__name__)

QUEUE_QUIET_SECONDS = HEAD_POLL_SECONDS


class LimitRefused(Exception):
    def __init__(self, scope: str, which: str, retry_after: int):
        super().__init__(f"{scope} over its {which} limit")
        self.scope, self.which, self.retry_after = scope, which, retry_after


class NoRoute(Exception):
    """No route can serve now: at capacity or cooling down (retry_after > 0), or none at all."""

    def __init__(self, retry_after: int, skips: list[Any], panic: bool):
        super().__init__("no usable route")
        self.retry_after, self.skips, self.panic = retry_after, skips, panic


@dataclass(frozen=True, slots=True)
class MoneyHold:
    request_id: str
    account_id: int
    key_id: int
    amount: int
    key_limit: int | None
    expires_at: float
    budgets: quota.Budgets = quota.NO_BUDGETS  # spend windows
    user_id: int | None = None
    started_at: float | None = None  # names the spend windows
    least: int | None = None  # a flexible hold: reserve as much of `amount` as there is room for, at least this


@dataclass(slots=True)
class Admission:
    """What a request holds in Redis: money, the caller's slots, and the current route's slot."""

    hold: Hold
    scopes: tuple[Scope, ...]
    plan: Plan
    route: Route
    panic: bool = False
    skips: list[Any] = field(default_factory=list)  # [(route, why)] from the latest pick
    tried: list[Any] = field(default_factory=list)  # [(channel id, key id)] in attempt order
    attempted: set[tuple[int, int, str]] = field(default_factory=set)  # the tried routes' attempt keys
    affinity: Affinity | None = None  # the conversation's pin, moved along on failover (relay/affinity.py)
    pinned: str = ""  # how the pin fared at admission: kept | moved | new ('' without affinity)

    def route_scopes(self) -> tuple[Scope, ...]:
        channel = self.route.channel
        prefix = redis_keys.channel_prefix(channel.id)
        found = (Scope(f"c:{channel.id}", channel.limits, prefix), Scope(f"ck:{self.route.key.id}", channel.key_limits, prefix))
        return tuple(s for s in found if s.limits.any)


def _text(values: Iterable[Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _plan_args(channels: tuple[ChannelView, ...], routes: list[Route]) -> list[Any]:
    index = {c.id: i + 1 for i, c in enumerate(channels)}
    args: list[Any] = [len(channels)]
    for c in channels:
        lim, key = c.limits, c.key_limits
        args += [c.id, lim.rpm or 0, lim.tpm or 0, lim.concurrency or 0, key.rpm or 0, key.tpm or 0, key.concurrency or 0]
    args.append(len(routes))
    for r in routes:
        args += [index[r.channel.id], r.key.id, r.key.since]
    return args


def _plan_keys(channels: tuple[ChannelView, ...], routes: list[Route], now: float) -> list[str]:
    """The keys `read_channels` and `read_routes` take, in their order."""
    keys: list[str] = []
    for c in channels:
        keys += limit_keys(f"c:{c.id}", c.limits, now, redis_keys.channel_prefix(c.id))
        keys.append(redis_keys.channel_health_key(c.id))
    for r in routes:
        cid = r.channel.id
        keys += [redis_keys.key_health_key(cid, r.key.id), redis_keys.key_dead_key(cid, r.key.id)]
        keys += limit_keys(f"ck:{r.key.id}", r.channel.key_limits, now, redis_keys.channel_prefix(cid))
    return keys


def _scope_args(scopes: tuple[Scope, ...]) -> list[Any]:
    args: list[Any] = [len(scopes)]
    for s in scopes:
        args += s.args()
    return args


def _scope_keys(scopes: tuple[Scope, ...], now: float) -> list[str]:
    return [k for s in scopes for k in s.keys(now)]


def lease_keys(scopes: Iterable[Scope], plan: Plan) -> tuple[str, ...]:
    """The concurrency slots an admission of `scopes` over `plan` may take: the lease sets of the
    caller's scopes, the plan's channels and their keys (those with a concurrency limit)."""
    limited = [s for s in scopes if s.limits.concurrency]
    for c in plan.channels:
        if c.limits.concurrency:
            limited.append(Scope(f"c:{c.id}", c.limits, redis_keys.channel_prefix(c.id)))
    for r in plan.routes:
        if r.channel.key_limits.concurrency:
            limited.append(Scope(f"ck:{r.key.id}", r.channel.key_limits, redis_keys.channel_prefix(r.channel.id)))
    return tuple(dict.fromkeys(redis_keys.lease_key(s.prefix, s.name) for s in limited))


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


def _skips(routes: list[Route], flat: list[Any]) -> list[tuple[Route, str]]:
    return [(routes[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]


def _answer(raw: Any, routes: list[Route]) -> list[Any]:
    """An admit reply that admits, as text; a refusal or a prior outcome raised."""
    if raw[0] in (b"idem", "idem"):
        raise idempotency.prior_from_reply(raw)
    reply = _text(raw)
    tag = reply[0]
    if tag == "limit":
        raise LimitRefused(reply[1], reply[2], int(reply[3]))
    if tag == "route":
        raise NoRoute(int(reply[1]), _skips(routes, reply[3:]), reply[2] == 1)
    if tag == "queue":
        raise Queued(int(reply[1]))
    if tag == "money":
        raise quota.refusal(int(reply[1]), int(reply[2]))
    return reply


class Gate:
    """The relay's Redis side of a request: admit, fail over, settle."""

    def __init__(self, redis: Redis[bytes], policy: HealthPolicy, lease_seconds: float, clock: Callable[[], float] = time.time,
                 register: Callable[[str], Callable[..., Any]] | None = None, generation_ttl: int = 0,
                 batch_size: int = 32, batch_in_flight: int = 2, split: bool | None = None):
        """`register(text)` makes a callable script; the relay passes relay/resp.py's lean one.
        `generation_ttl`: how long settle keeps each request's record for GET /v1/generation.
        `batch_size`, `batch_in_flight`: how admits (and settles) of concurrent requests share
        round trips (relay/script_batch.py). `split`: run admit and settle as calls on the slots of
        what they touch (the money, each channel tried, the other scopes), the default when the
        money is spread over buckets (Redis Cluster; relay/redis_keys.py)."""
        self.redis = redis
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.generation_ttl = generation_ttl
        self.clock = clock
        self.split = redis_keys.SPREAD if split is None else split
        self._touched = 0.0  # when this process last wrote the last-success time (health's network detector)
        register = register or redis.register_script
        self._batch_size, self._batch_in_flight = batch_size, batch_in_flight
        # Admit and settle run once or more per request, so concurrent ones share a round trip
        # (relay/script_batch.py); a failover is rare and goes alone on one server. A script call's
        # keys must share a slot (a cluster refuses a command whose keys span slots, whatever the
        # script's flags): split, every call (of whatever kind: one script has every body) batches
        # per master, a batch running as one call per slot among its calls, all in one pipeline.
        # Per master, so that a master that hangs holds up the requests whose money or channels it
        # keeps, and no others.
        if not self.split:
            self._per_request = BatchedScript(register(PER_REQUEST), batch_size, batch_in_flight)
            self._failover = register(FAILOVER)
        else:
            self._split = register(SPLIT_CALLS)
        self._batches: dict[Any, BatchedScript] = {}  # split: per master
        # Split, what this process has seen of channels' ejections (from every channel call's
        # reply): Envoy's panic judges the share of a model's channels ejected before the walk.
        self._ejected: dict[int, float] = {}
        self._network = NetworkWatch(policy.network_window_seconds)
        self._queues_quiet: dict[str, float] = {}  # split: a queue's name → when this process last found it empty
        # Where a hold goes that the split admit made and could not undo (relay/billing.py's
        # `Charges.abandon`, set by the pipeline that owns both).
        self.strand: Callable[[str, int, str, tuple[str, ...]], None] | None = None

    def admit(self, money: MoneyHold, scopes: tuple[Scope, ...], plan: Plan, claim: idempotency.Claim | None = None,
              affinity: Affinity | None = None, queue: QueueSpot | None = None) -> Admission:
        """Raises `idempotency.Prior` when `claim`'s key was seen before. `affinity`: the
        conversation's pin, whose route is tried first (relay/affinity.py). `queue`: the model's
        capacity queue (relay/capacity_queue.py) when the group waits for capacity; raises `Queued`
        when others wait ahead."""
        now = self.clock()
        routes = list(plan.routes)
        hold = quota.hold_record(money.request_id, money.account_id, money.key_id, money.amount, money.budgets, money.user_id, money.started_at)
        money_keys, margs = quota.hold_call(hold, money.key_limit, money.expires_at, money.budgets, money.least)
        idem = claim.admit_args() if claim is not None else []
        claim_keys = [claim.redis_key] if claim is not None else []
        money_args = [money.request_id, len(margs), *margs, len(idem), *idem]
        if self.split:
            return self._admit_split(hold, money.key_limit, money_keys, money_args, claim_keys, scopes, plan, affinity, queue, now)
        pin_keys, pin_args = affinity_args(affinity, plan.channels)
        queue_keys, queue_argv = queue_args(queue, now)
        route_keys = [*_scope_keys(scopes, now), *_plan_keys(plan.channels, routes, now), *pin_keys, *queue_keys]
        route_args = [now, now + self.lease_seconds, *_scope_args(scopes), *_plan_args(plan.channels, routes), *pin_args, *queue_argv]
        reply = _answer(self._per_request(keys=[*money_keys, *route_keys, *claim_keys],
                                          args=[ADMIT_CALL, len(money_keys), *money_args, *route_args]), routes)
        route = routes[int(reply[2]) - 1]
        reserved = int(reply[1])
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        return Admission(hold, scopes, plan, route, reply[3] == 1, _skips(routes, reply[5:]), [route.ids], {route.attempt_key}, affinity,
                         reply[4])

    # --- split: a call on each slot, batched per master --------------------------------------------
    def _call(self, keys: list[Any], args: list[Any]) -> Any:
        node_of = getattr(self._split, "node_of", None)
        node = node_of(keys[0]) if node_of is not None else None
        batches = self._batches.get(node)
        if batches is None:
            batches = self._batches.setdefault(node, BatchedScript(self._split, self._batch_size, self._batch_in_flight, slot_of=_first_key_slot))
        return batches(keys=keys, args=args)

    def _admit_split(self, hold: Hold, key_limit: int | None, money_keys: list[Any], money_args: list[Any], claim_keys: list[str],
                     scopes: tuple[Scope, ...], plan: Plan, affinity: Affinity | None, queue: QueueSpot | None, now: float) -> Admission:
        """The money call on the account's bucket (with the API key's limits and the pin), then one
        call for each other scope's slot and the queue's, then the channels in turn until one takes
        the request. A refusal (or a failure) after the money call undoes what was taken, so that a
        refusal still leaves nothing held."""
        rid, lease_end, routes = hold.request_id, now + self.lease_seconds, list(plan.routes)
        own = tuple(s for s in scopes if s.with_money)
        pin_keys = [affinity.redis_key] if affinity is not None else []
        reply = _answer(self._call([*money_keys, *_scope_keys(own, now), *pin_keys, *claim_keys],
                                   [ADMIT_MONEY_CALL, len(money_keys), *money_args, now, lease_end, *_scope_args(own), 1 if pin_keys else 0]),
                        routes)
        reserved, pinned = int(reply[1]), (str(reply[2]) if affinity is not None else None)
        if reserved != hold.amount:
            hold = replace(hold, amount=reserved)
        taken: list[tuple[Scope, ...]] = []
        try:
            for side in _by_prefix(s for s in scopes if not s.with_money):
                _answer(self._call(_scope_keys(side, now), [SCOPES_TAKE_CALL, rid, now, lease_end, *_scope_args(side)]), routes)
                taken.append(side)
            if queue is not None and (queue.ticket or not self._quiet(queue, now)):
                try:
                    _answer(self._call(list(queue.keys), [QUEUE_GATE_CALL, queue.ticket, now, now + BEAT_SECONDS]), routes)
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
            self._give_back(hold, key_limit, claim_keys, own, taken, now, cause, lease_keys(scopes, plan))
            raise
        route = routes[index]
        return Admission(hold, scopes, plan, route, panic, skips, [route.ids], {route.attempt_key}, affinity, how)

    def _give_back(self, hold: Hold, key_limit: int | None, claim_keys: list[str], own: tuple[Scope, ...], taken: list[tuple[Scope, ...]],
                   now: float, cause: BaseException, leases: tuple[str, ...]) -> None:
        """Undo an admission that `cause` stopped after its money call. When Redis refuses the undo
        (a cluster between a master's loss and its replica's promotion answers CLUSTERDOWN
        everywhere) the hold, the claim and every concurrency slot it may have taken (`leases`) are
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
                self.strand(hold.request_id, hold.account_id, claim_keys[0] if claim_keys else "", leases)
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
        keys = [redis_keys.hold_key(bucket, hold.request_id), redis_keys.holds_key(bucket), *scopes, *_scope_keys(own, now), *claim_keys]
        self._call(keys, [ADMIT_UNDO_CALL, hold.request_id, len(scopes), 1 if claim_keys else 0, *_scope_args(own)])
        for side in taken:
            self._call(_scope_keys(side, now), [SCOPES_UNDO_CALL, hold.request_id, *_scope_args(side)])

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
                reply = _text(self._call(_plan_keys((channel,), part, now),
                                         [CHANNEL_PICK_CALL, rid, now, lease_end, 1 if panic else 0, *_plan_args((channel,), part)]))
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
        keys = [*_scope_keys(scopes, now), *(judged.keys(shared=False) if judged is not None else [])]
        if not keys:
            return ["not_counted", 0, 0] if outcome is not None and judged is None else []
        outcome_args = NO_OUTCOME_ARGS if judged is None else [*judged.args(shared=False), *(self.policy.args() if judged.needs_policy else ())]
        record = _text(self._call(keys, [CHANNEL_SETTLE_CALL, now, rid, tokens, *_scope_args(scopes), *outcome_args]))[2:]
        if judged is None:
            return ["not_counted", 0, 0] if outcome is not None else record
        if record[0] == "failure" and record[2]:  # 0: not ejected now, or already (a failure during an ejection is not counted)
            self._saw(judged.channel_id, float(record[2]), now)
        elif record[0] == "dead" and record[1] == 1:
            try:
                self.redis.xadd(redis_keys.HEALTH_REPORTS, judged.report(now), maxlen=10_000, approximate=True)
            except Exception:  # the dead mark stands; the key fails again after it lapses, and is reported then
                log.exception("key %s is dead; the report to disable it was not written", judged.key_id)
        return record

    def failover(self, admission: Admission, failed: Outcome, remaining: list[Route]) -> tuple[Route | None, int, list[Any]]:
        """Record the failed attempt and move to the first usable route of `remaining`.

        Returns (the new route or None, seconds to wait when only capacity stood in the way, the
        health record of the failure).
        """
        now = self.clock()
        rid = admission.hold.request_id
        route_scopes = admission.route_scopes()
        if self.split:
            record = self._channel_settle(route_scopes, failed, rid, 0, now)
            try:
                index, admission.panic, admission.skips, _ = self._walk(admission.plan, remaining, rid, now, now + self.lease_seconds, None)
            except NoRoute as none:
                admission.panic, admission.skips = none.panic, none.skips
                return None, none.retry_after, record
            pick, wait = index + 1, 0
        else:
            pin_keys, pin_args = affinity_args(admission.affinity, admission.plan.channels)
            keys = [*failed.keys(), *_scope_keys(route_scopes, now), *_plan_keys(admission.plan.channels, remaining, now), *pin_keys]
            args = [now, rid, now + self.lease_seconds, *self.policy.args(), *failed.args(), *_scope_args(route_scopes),
                    *_plan_args(admission.plan.channels, remaining), *pin_args]
            reply = _text(self._failover(keys=keys, args=args))
            pick, admission.panic, wait, record = int(reply[0]), reply[1] == 1, int(reply[2]), reply[3:6]
            admission.skips = _skips(remaining, reply[6:])
        if pick == 0:
            return None, wait, record
        admission.route = remaining[pick - 1]
        admission.tried.append(admission.route.ids)
        admission.attempted.add(admission.route.attempt_key)
        return admission.route, wait, record

    def settle(self, admission: Admission, cost: int, event: bytes, tokens: int, outcome: Outcome | None,
               record: list[Any] | None = None) -> tuple[bool, list[Any], int]:
        """Settle once: money, leases, tokens, health, and `record` (relay/generation.py's
        `settle_args`) kept for GET /v1/generation. Returns (settled now, the health record, the
        amount charged); (False, [], 0) when it was already settled."""
        now = self.clock()
        hold = admission.hold
        money_keys, margs = quota.settle_call(hold, cost, event)
        gen_key = redis_keys.generation_key(hold.account_id, hold.request_id)
        money_args = [len(margs), *margs, *(record or [0])]
        if self.split:
            return self._settle_split(admission, money_keys, money_args, gen_key, tokens, outcome, now)
        scopes = admission.scopes + admission.route_scopes()
        outcome_args = NO_OUTCOME_ARGS
        if outcome is not None:
            touch = outcome.effect is Effect.OK and not 0 <= now - self._touched < 1.0
            if touch:
                self._touched = now
            outcome_args = [*outcome.args(touch), *(self.policy.args() if outcome.needs_policy else ())]
        route_keys = [*_scope_keys(scopes, now), *(outcome.keys() if outcome is not None else [])]
        route_args = [now, hold.request_id, tokens, *_scope_args(scopes), *outcome_args]
        reply = _text(self._per_request(keys=[*money_keys, *route_keys, gen_key],
                                        args=[SETTLE_CALL, len(money_keys), *money_args, *route_args]))
        if reply[0] != 1:
            return False, [], 0
        return True, reply[2:], int(reply[1])

    def _settle_split(self, admission: Admission, money_keys: list[Any], money_args: list[Any], gen_key: str, tokens: int,
                      outcome: Outcome | None, now: float) -> tuple[bool, list[Any], int]:
        """The money call first (the charge, the API key's limits, the pin); only when it settled
        now, the other scopes' and the channel's calls."""
        rid = admission.hold.request_id
        own = tuple(s for s in admission.scopes if s.with_money)
        affinity = admission.affinity
        pin_keys = [affinity.redis_key] if affinity is not None else []
        pin_args = [affinity.ttl, admission.route.key.id] if affinity is not None else [0]
        reply = _text(self._call([*money_keys, *_scope_keys(own, now), *pin_keys, gen_key],
                                 [SETTLE_MONEY_CALL, len(money_keys), *money_args, now, rid, tokens, *_scope_args(own), *pin_args]))
        if reply[0] != 1:
            return False, [], 0
        charged = int(reply[1])
        try:
            for side in _by_prefix(s for s in admission.scopes if not s.with_money):
                self._call(_scope_keys(side, now), [SCOPES_FINISH_CALL, rid, tokens, *_scope_args(side)])
            record = self._channel_settle(admission.route_scopes(), outcome, rid, tokens, now)
        except Exception:
            # Charged already, which is what must happen once; the leases lapse by themselves.
            log.exception("request %s settled; its leases, tokens and health outcome were not recorded", rid)
            return True, [], charged
        return True, record, charged
