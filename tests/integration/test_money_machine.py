"""The money operations in any order, on SQLite and PostgreSQL: a hypothesis state machine.

Holds (some already past their expiry, as a crashed relay leaves them), settles (an answer, a stream
cut short, a failure), refunds (all, part, more than charged, twice), top-ups, the sweeper, a second
settler of the same request, a settle whose reply was lost replayed from the journal, a usage event
queued twice, settles Redis could not take — journaled on disk and replayed when it answers
again, before or after the sweeper released their hold — and Redis losing its data while requests
hold money (rebuilt from SQL; those requests' answers are charged by ingestion, never below zero). Everything goes through the product's own
parts: the relay's `Gate` and `Charges` (relay/billing.py, the one settler), the settle journal and
its replayer, the usage consumer, the billing and refund services, the sweeper. Redis "down" is a
client pointed at a closed port, as a relay sees a Redis that died.

After every step the books are checked (the backlog ingested first where SQL is read): the ledger's
sum, the stored balance and the live balance agree; every hold is open, settled or released, once;
a settle stays within its hold unless the balance had room for the overrun; refunds stay within the
charge; nothing is negative; no request is logged or charged twice.

Bounded and derandomized (the same examples on every run): 40 examples of up to 30 steps per back
end. The last test pins a case the invariants would catch only on a longer run: a journaled settle
replayed after the sweeper released its hold, and another request spent the money meanwhile, is
charged only what is left.
"""
from __future__ import annotations

import itertools
from collections import Counter
import time
from dataclasses import dataclass

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from controlplane import key_rebuild, ledger
from controlplane.dead_letters import DEAD_STREAM
from controlplane.extensions import db
from controlplane.models import Account, ApiKey, EntryKind, LedgerEntry, Refund, RequestLog
from controlplane.services import ServiceError, billing, refunds
from relay.admission import Admission, Gate, MoneyHold
from relay.attempt import Answer, Terms, Unanswered
from relay.billing import Charge, Charges
from relay.context import RequestContext, json_response
from relay.errors import RelayError
from relay.health import HealthPolicy
from relay.journal import JournalEntry, Replayer, SettleJournal
from relay.keys import KeyView
from relay.pricing import Price, Usage
from relay.quota import HoldRefused, Quota
from relay.redis_keys import HOLDS_INDEXES, hold_key
from relay.routing import RetryBudget
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView
from relay.streaming import CALLER_GONE, FAILED, StreamEnd
from relay.usage import USAGE_STREAMS
from tests import factories
from tests.conftest import clean_tables
from tests.gateway import free_port
from workers import maintenance
from workers import usage as usage_worker

# 1 µ$ per input token, 2 µ$ per output token: every cost below is worked out by hand.
PRICE = Price("m", input=1_000_000, output=2_000_000)
PROMPT_ESTIMATE = 30  # the input a cut stream is billed for
TERMS = Terms(PRICE, 10_000, PROMPT_ESTIMATE)
CHANNEL = ChannelView(id=1, name="c1", type="openai", base_url="http://x", models=("m",),
                      keys=(ChannelKeyView(id=10, secret="sk", since=0.0),))
PLAN = Plan((CHANNEL,), (Route(CHANNEL, CHANNEL.keys[0], "m"),))
FUNDS = ("0.004", "0.02")  # µ$ 4,000 and 20,000: small enough that holds are refused now and then
# Each customer's key's credit limit, far above its funds so that it never refuses: the first key
# reserves nothing on itself, the second reserves against its limit.
KEY_LIMITS = (None, 10**12)
STAFF = factories.ACTOR

_ids = itertools.count(1)
RAN: Counter[str] = Counter()  # steps per rule, so a change that starves a rule fails the test


def usd(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


@dataclass
class Request:
    """One request as the machine knows it. `state`: open (held), settled, journaled (settled while
    Redis was down, waiting for replay), released (the sweeper took the hold back unsettled)."""

    ctx: RequestContext
    admission: Admission
    expired: bool
    state: str = "open"
    swept: bool = False  # the sweeper released its hold (its record stays, holding nothing)
    lost: bool = False  # Redis lost its data while this request held: no hold, no record left
    cost: int = 0  # what the settle meant to charge
    charged: int | None = None  # what it did charge, once known
    event: bytes | None = None  # the usage event as queued
    refunded: int = 0

    @property
    def rid(self) -> str:
        return self.ctx.request_id

    @property
    def held(self) -> int:
        return self.admission.hold.amount

    @property
    def account_id(self) -> int:
        return self.admission.hold.account_id

    @property
    def key_id(self) -> int:
        return self.admission.hold.key_id


class MoneyMachine(RuleBasedStateMachine):
    app = None  # set by the test: the control plane on one SQL back end
    redis: redis_lib.Redis
    folder = None

    def __init__(self):
        super().__init__()
        self.redis.flushdb()
        db.session.rollback()
        clean_tables(self.app)
        self.quota = Quota(self.redis)
        journal = SettleJournal(self.folder / f"journal-{next(_ids)}", pid=1)
        replayer = Replayer(self.redis.register_script, self.quota.release)
        budget = RetryBudget()
        self.charges = Charges(Gate(self.redis, HealthPolicy(), lease_seconds=600), journal, replayer, budget)
        # The same process with Redis gone: its settles fail to connect and go to the same journal.
        down = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        self.down = Charges(Gate(down, HealthPolicy(), lease_seconds=600), journal, replayer, budget)
        self.customers: list[KeyView] = []
        for funds in FUNDS:
            user = factories.funded_user(funds)
            key, _ = factories.api_key(user)
            self.customers.append(KeyView(id=key.id, account_id=user.account_id, user_id=user.id, group="default", prefix="sk-m"))
        self.requests: list[Request] = []

    # --- helpers ------------------------------------------------------------------------------
    def _in(self, *states: str) -> list[Request]:
        return [r for r in self.requests if r.state in states]

    def _backlog_ingested(self) -> None:
        if self.redis.xlen(USAGE_STREAMS[0]):
            usage_worker.ingest(max_seconds=30)
        assert self.redis.xlen(USAGE_STREAMS[0]) == 0 and self.redis.xlen(DEAD_STREAM) == 0
        db.session.rollback()  # read what ingestion committed

    def _last_event(self) -> bytes:
        [(_, fields)] = self.redis.xrevrange(USAGE_STREAMS[0], count=1)
        return fields[b"e"]

    def _settle(self, request: Request, owner: Charges, how: str, tokens_in: int, tokens_out: int) -> Charge:
        """Settle `request` the way a request ends: `answer` (reported usage), `cut` (a stream ended
        early: the input estimate and what was delivered) or `failed` (nothing reached the caller)."""
        charge = owner.open(request.ctx, request.admission, TERMS)
        if how == "answer":
            request.cost = tokens_in + 2 * tokens_out
            charge.take(Answer(json_response(200, b"{}"), Usage(input=tokens_in, output=tokens_out)))
        elif how == "cut":
            request.cost = PROMPT_ESTIMATE + 2 * tokens_out
            status = CALLER_GONE if tokens_in % 2 else FAILED
            charge.stream_ended(StreamEnd(Usage(input=tokens_in, output=tokens_out + 5), tokens_out, status, "cut"))
        else:
            request.cost = 0
            with pytest.raises(RelayError):
                charge.take(Unanswered(RelayError(502, "upstream_error", "every attempt failed"), None))
        assert charge.settled
        return charge

    # --- rules --------------------------------------------------------------------------------
    @rule(who=st.integers(0, len(FUNDS) - 1), amount=st.integers(0, 6_000), expired=st.booleans())
    def hold(self, who, amount, expired):
        """A request is admitted: its worst case reserved, or refused when there is no room for it."""
        RAN["hold"] += 1
        key = self.customers[who]
        bal, held = self.quota.account(key.account_id)
        rid = f"req_m_{next(_ids)}"
        ctx = RequestContext(rid, "/v1/chat/completions", "127.0.0.1", key=key, model="m", upstream_model="m")
        expires = time.time() + (-5 if expired else 3_600)  # expired: its relay died long ago
        self.charges.budget.begin_request()
        try:
            admission = self.charges.gate.admit(MoneyHold(rid, key.account_id, key.id, amount, KEY_LIMITS[who], expires), (), PLAN)
        except HoldRefused:
            self.charges.budget.end_request()
            RAN["hold refused"] += 1
            assert bal - held < amount or (amount == 0 and bal - held < 0)
            return
        assert bal - held >= amount and admission.hold.amount == amount
        self.requests.append(Request(ctx, admission, expired))

    @precondition(lambda self: self._in("open"))
    @rule(data=st.data(), how=st.sampled_from(["answer", "cut", "failed"]), tokens_in=st.integers(0, 3_000),
          tokens_out=st.integers(0, 2_000))
    def settle(self, data, how, tokens_in, tokens_out):
        """The request ends while Redis answers: charged once, within its hold unless there was room."""
        RAN["settle"] += 1
        request = data.draw(st.sampled_from(self._in("open")), label="request")
        before = self.quota.account(request.account_id)
        charge = self._settle(request, self.charges, how, tokens_in, tokens_out)
        request.state, request.charged, request.event = "settled", charge.charged, self._last_event()
        if request.lost:  # no hold: nothing moves live, ingestion charges it as far as the balance has room
            RAN["settled after Redis lost its hold"] += 1
            assert charge.charged == 0 and self.quota.account(request.account_id) == before
            request.charged = None
            return
        if request.cost <= request.held:
            assert charge.charged == request.cost
        else:  # the input outgrew its estimate: charged past the hold only as far as the balance had room
            RAN["cost over the hold"] += 1
            assert request.held <= charge.charged <= request.cost
            bal, held = self.quota.account(request.account_id)
            assert charge.charged == request.cost or bal - held == 0  # cut: no room left
        after = self.quota.account(request.account_id)
        assert after == (before[0] - charge.charged, before[1] - request.held)

    @precondition(lambda self: self._in("open"))
    @rule(data=st.data(), how=st.sampled_from(["answer", "cut"]), tokens_in=st.integers(0, 3_000), tokens_out=st.integers(0, 2_000))
    def settle_while_redis_is_down(self, data, how, tokens_in, tokens_out):
        """Redis cannot take the settle: it goes to the journal, nothing moves, the hold stays."""
        RAN["settle_while_redis_is_down"] += 1
        request = data.draw(st.sampled_from(self._in("open")), label="request")
        before, queued = self.quota.account(request.account_id), self.redis.xlen(USAGE_STREAMS[0])
        charge = self._settle(request, self.down, how, tokens_in, tokens_out)
        assert charge.charged == request.cost  # what it meant to charge, kept in the journal
        assert self.quota.account(request.account_id) == before and self.redis.xlen(USAGE_STREAMS[0]) == queued
        request.state = "journaled"

    @precondition(lambda self: self._in("journaled"))
    @rule()
    def redis_answers_again(self):
        """The journal is replayed: each is the ordinary settle, of its hold or, where the sweeper
        released that, of the emptied record left in its place (charged as far as there is room)."""
        RAN["redis_answers_again"] += 1
        waiting = self._in("journaled")
        assert self.charges.replay_own() == len(waiting)
        assert not self.charges.journal.pending() or self.charges.journal.path.stat().st_size == 0
        for request in waiting:
            request.state = "settled"
            request.charged = None  # known once ingested: the settle may have cut it to the balance's room
        # The replay queued one event each, in journal order.
        entries = self.redis.xrange(USAGE_STREAMS[0])[-len(waiting):]
        for request, (_, fields) in zip(waiting, entries, strict=True):
            assert (b"unheld" in fields) == request.lost
            RAN["replayed after its hold was released"] += request.swept
            request.event = fields[b"e"]

    @precondition(lambda self: self._in("settled"))
    @rule(data=st.data(), tokens=st.integers(0, 2_000))
    def second_settler(self, data, tokens):
        """Another settle of the same request (the same id, e.g. a second end hook or a process that
        thinks it owns it): charges nothing live; it finds no hold, as after a Redis that lost its
        data, so its event is queued `unheld`, and ingestion finds the request written (or writes
        the first settle's event of it) and charges nothing twice."""
        RAN["second_settler"] += 1
        request = data.draw(st.sampled_from(self._in("settled")), label="request")
        before, queued = self.quota.account(request.account_id), self.redis.xlen(USAGE_STREAMS[0])
        charge = self.charges.open(request.ctx, request.admission, TERMS)
        charge.take(Answer(json_response(200, b"{}"), Usage(input=tokens, output=tokens)))
        assert charge.charged == 0
        assert self.quota.account(request.account_id) == before and self.redis.xlen(USAGE_STREAMS[0]) == queued + 1
        assert b"unheld" in self.redis.xrange(USAGE_STREAMS[0])[-1][1]

    @precondition(lambda self: self._in("settled") and not self._in("journaled"))
    @rule(data=st.data())
    def settle_replayed_from_a_journal(self, data):
        """A settle that ran but whose reply was lost, journaled anyway and replayed (by a relay that
        died before emptying its journal): the hold is gone, the event is queued `unheld` and
        ingestion finds the request written already."""
        RAN["settle_replayed_from_a_journal"] += 1
        request = data.draw(st.sampled_from(self._in("settled")), label="request")
        before = self.quota.account(request.account_id)
        self.charges.journal.append(JournalEntry(request.admission.hold, request.cost, request.event))
        assert self.charges.replay_own() == 1
        assert self.quota.account(request.account_id) == before

    @precondition(lambda self: self._in("settled"))
    @rule(data=st.data())
    def usage_event_queued_twice(self, data):
        """The same usage event in the stream again (a settle retried by the client library)."""
        RAN["usage_event_queued_twice"] += 1
        request = data.draw(st.sampled_from(self._in("settled")), label="request")
        self.redis.xadd(USAGE_STREAMS[0], {"e": request.event})

    @precondition(lambda self: any(r.expired and not r.swept and not r.lost for r in self._in("open", "journaled")))
    @rule()
    def sweep(self):
        """The sweeper releases the holds past their expiry, and only those."""
        RAN["sweep"] += 1
        due = [r for r in self._in("open", "journaled") if r.expired and not r.swept and not r.lost]
        assert maintenance.sweep_holds() == len(due)
        for request in due:
            request.swept = True
            if request.state == "open":
                request.state = "released"  # a crashed relay's request: never settled, never charged

    @precondition(lambda self: self._in("open", "journaled"))
    @rule()
    def redis_loses_its_data(self):
        """Redis restarts empty (no persistence) while requests hold money: holds, live balances and
        key spend are gone, and the control plane's rebuild puts back what SQL owns. The requests
        still running find no hold when they end (their answers go to ingestion `unheld`)."""
        RAN["redis_loses_its_data"] += 1
        self._backlog_ingested()
        self.redis.flushdb()
        key_rebuild.rebuild(self.redis)
        usage_worker.ensure_group(self.redis)
        for request in self.requests:
            if request.state in ("open", "journaled") or request.swept:
                request.lost = True

    @rule(who=st.integers(0, len(FUNDS) - 1), cents=st.integers(1, 3))
    def top_up(self, who, cents):
        RAN["top_up"] += 1
        account = db.session.get(Account, self.customers[who].account_id)
        before = self.quota.account(account.id)[0]
        billing.topup(STAFF, account, usd(cents * 10_000), "machine top-up")
        assert self.quota.account(account.id)[0] == before + cents * 10_000

    @precondition(lambda self: self._in("settled"))
    @rule(data=st.data(), part=st.sampled_from(["all", "half", "one", "over"]))
    def refund(self, data, part):
        """A request's charge given back once: all, part, never more than charged."""
        RAN["refund"] += 1
        self._backlog_ingested()
        charged = [r for r in self._in("settled") if self._charge_of(r) > 0]
        if not charged:
            return
        request = data.draw(st.sampled_from(charged), label="request")
        charge = self._charge_of(request)
        amount = {"all": None, "half": usd(max(1, charge // 2)), "one": usd(1), "over": usd(charge + 1)}[part]
        before = self.quota.account(request.account_id)[0]
        if part == "over" or request.refunded:
            with pytest.raises(ServiceError):
                refunds.refund_request(STAFF, request.rid, amount, "machine refund")
            db.session.rollback()
            assert self.quota.account(request.account_id)[0] == before
            return
        row = refunds.refund_request(STAFF, request.rid, amount, "machine refund")
        request.refunded = row.amount
        assert 0 < row.amount <= charge and self.quota.account(request.account_id)[0] == before + row.amount

    def _charge_of(self, request: Request) -> int:
        amount = db.session.scalar(select(LedgerEntry.amount).where(LedgerEntry.kind == EntryKind.CHARGE.value,
                                                                    LedgerEntry.request_id == request.rid))
        return -(amount or 0)

    # --- invariants -----------------------------------------------------------------------------
    @invariant()
    def books_agree(self):
        """Σ ledger = stored balance = live balance, for every account, with the backlog ingested."""
        self._backlog_ingested()
        for key in self.customers:
            entries = ledger.sum_of_entries(key.account_id)
            assert entries == ledger.stored_balance(key.account_id) == self.quota.account(key.account_id)[0]

    @invariant()
    def holds_resolved_once(self):
        """The open holds in Redis are the machine's open ones (journaled ones keep theirs until
        replayed or swept), and each account's and key's `held` is their sum."""
        holding = [r for r in self._in("open", "journaled") if not r.swept and not r.lost]
        lapsed = [r for r in self._in("released", "journaled") if r.swept and not r.lost]  # released: their records hold nothing
        assert {m.decode() for m in self.redis.zrange(HOLDS_INDEXES[0], 0, -1)} == {r.rid for r in holding}
        assert all(self.redis.exists(hold_key(0, r.rid)) == (r in holding or r in lapsed) for r in self.requests)
        assert all(self.redis.hget(hold_key(0, r.rid), "amt") == b"0" for r in lapsed)
        for key in self.customers:
            mine = [r.held for r in holding if r.key_id == key.id]
            assert self.quota.account(key.account_id)[1] == sum(mine)
            # A key reserves only when it has a credit limit to reserve against.
            assert self.quota.key_spent(key.account_id, key.id)[1] == (sum(mine) if KEY_LIMITS[self.customers.index(key)] is not None else 0)

    @invariant()
    def nothing_negative(self):
        for key in self.customers:
            bal, held = self.quota.account(key.account_id)
            spent, kheld = self.quota.key_spent(key.account_id, key.id)
            assert bal >= 0 and held >= 0 and bal - held >= 0, (bal, held)
            assert spent >= 0 and kheld >= 0

    @invariant()
    def each_request_written_once(self):
        """Every settled request has one request log and at most one charge; nothing else is logged;
        a settle is within its hold unless the balance had room for more."""
        self._backlog_ingested()
        logged = list(db.session.scalars(select(RequestLog.request_id)))
        assert len(logged) == len(set(logged))
        assert set(logged) == {r.rid for r in self._in("settled")}
        twice = db.session.execute(select(LedgerEntry.request_id).where(LedgerEntry.kind == EntryKind.CHARGE.value)
                                   .group_by(LedgerEntry.request_id).having(func.count() > 1)).all()
        assert twice == []
        costs = dict(db.session.execute(select(RequestLog.request_id, RequestLog.cost)).all())
        for request in self._in("settled"):
            charge = self._charge_of(request)
            assert charge == costs[request.rid]
            if request.charged is None:  # replayed from the journal: the ordinary settle's rule, of a hold of 0 if swept
                if request.lost:  # no hold at all: ingestion charged it as far as the balance had room
                    assert 0 <= charge <= request.cost
                elif request.swept:
                    assert 0 <= charge <= request.cost
                else:
                    assert charge == request.cost if request.cost <= request.held else request.held <= charge <= request.cost
                request.charged = charge
            assert charge == request.charged

    @invariant()
    def refunds_within_the_charge(self):
        self._backlog_ingested()
        rows = db.session.execute(select(Refund.request_id, func.count(), func.sum(Refund.amount)).group_by(Refund.request_id)).all()
        for rid, count, total in rows:
            [request] = [r for r in self.requests if r.rid == rid]
            assert count == 1 and total == request.refunded <= self._charge_of(request)
        spent = {k.id: s for k, s in db.session.execute(select(ApiKey, ApiKey.spent)).all()}
        assert all(s >= 0 for s in spent.values())

    def teardown(self):
        db.session.rollback()


RULES = [name for name, value in vars(MoneyMachine).items() if hasattr(value, "hypothesis_stateful_rule")]


@pytest.mark.timeout(300)  # 40 examples of 30 steps: minutes on a busy machine, not a hang
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_money_operations_in_any_order_keep_the_books(backend, request, redis_client, tmp_path):
    app = request.getfixturevalue(f"{backend}_app")
    RAN.clear()
    with app.app_context():
        machine = type("Machine", (MoneyMachine,), {"app": app, "redis": redis_client, "folder": tmp_path})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=40, stateful_step_count=30, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print(f"{backend}: {sum(RAN.values())} steps", dict(RAN))
    assert all(RAN[name] for name in RULES), RAN


@pytest.mark.parametrize(("spent_meanwhile", "charged"), [(4_000, 0), (1_000, 3_000), (0, 4_000)])
def test_a_settle_replayed_without_its_hold_never_takes_the_balance_below_zero(sql_app, redis_client, tmp_path, spent_meanwhile, charged):
    """Redis cannot take a settle; by the time it answers again the hold is past its expiry and the
    sweeper releases it; another request spends some or all of the money; then the journal is
    replayed: it charges what is left, up to its cost, and the books agree."""
    machine = type("Machine", (MoneyMachine,), {"app": sql_app, "redis": redis_client, "folder": tmp_path})()
    key = machine.customers[0]  # µ$ 4,000
    rid = "req_m_swept"
    ctx = RequestContext(rid, "/v1/chat/completions", "127.0.0.1", key=key, model="m", upstream_model="m")
    admission = machine.charges.gate.admit(MoneyHold(rid, key.account_id, key.id, 4_000, None, time.time() - 5), (), PLAN)
    request = Request(ctx, admission, expired=True)
    machine._settle(request, machine.down, "answer", 0, 2_000)  # µ$ 4,000 journaled
    assert maintenance.sweep_holds() == 1
    assert machine.quota.account(key.account_id) == (4_000, 0)  # the hold's money is free again
    other = machine.charges.gate.admit(MoneyHold("req_m_other", key.account_id, key.id, 4_000, None, time.time() + 60), (), PLAN)
    other_ctx = RequestContext("req_m_other", "/v1/chat/completions", "127.0.0.1", key=key, model="m", upstream_model="m")
    machine._settle(Request(other_ctx, other, expired=False), machine.charges, "answer", 0, spent_meanwhile // 2)
    assert machine.charges.replay_own() == 1
    assert not redis_client.exists(hold_key(0, rid))  # the emptied record was the settle's token: used once
    machine._backlog_ingested()
    costs = dict(db.session.execute(select(RequestLog.request_id, RequestLog.cost)).all())
    assert costs == {rid: charged, "req_m_other": spent_meanwhile}
    left = 4_000 - spent_meanwhile - charged
    assert ledger.sum_of_entries(key.account_id) == ledger.stored_balance(key.account_id) == machine.quota.account(key.account_id)[0] == left
    assert machine.quota.key_spent(key.account_id, key.id) == (spent_meanwhile + charged, 0)
