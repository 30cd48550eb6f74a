"""Channel and key state changes the system makes: from probe results, and from the dead
keys relays report. Every change is a compare-and-set in SQL with its channel event (reason, time,
actor) and audit entry in the same transaction, so a worker killed midway leaves all of it or none.
An operator's `disabled` is never matched, so never changed. Operators hear about changes through
the notification outbox (`ChannelEvent.notified_at`, see controlplane/services/health_notify.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select, update

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, ChannelKey, ChannelStatus, utcnow
from controlplane.services.base import Actor, audit, commit
from controlplane.services.probes import ProbeResult, Verdict
from controlplane.settings import ProbeSettings
from relay.channel_config import load_config
from relay.snapshot import ChannelKeyView, ChannelView

ENABLED, DISABLED, AUTO = ChannelStatus.ENABLED.value, ChannelStatus.DISABLED.value, ChannelStatus.AUTO_DISABLED.value
HEALTH, RELAY = Actor.system("health"), Actor.system("relay")
SYSTEM_ACTORS = (HEALTH.name, RELAY.name)


@dataclass(frozen=True)
class Transition:
    channel_id: int
    key_id: int | None
    from_status: str
    to_status: str
    reason: str


def _cas(row_type, row_id: int, channel_id: int, expected: str, to: str, reason: str, actor: Actor, *where) -> Transition | None:
    """Move one row from `expected` to `to` if it is still `expected`; record it. None if it was not."""
    changed = db.session.execute(
        update(row_type).where(row_type.id == row_id, row_type.status == expected, *where)
        .values(status=to, status_reason=reason, status_since=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return None
    key_id = row_id if row_type is ChannelKey else None
    db.session.add(ChannelEvent(channel_id=channel_id, channel_key_id=key_id, from_status=expected, to_status=to, reason=reason, actor=actor.name))
    what = "channel_key.status" if key_id else "channel.status"
    audit(actor, what, "channel_key" if key_id else "channel", row_id, before={"status": expected}, after={"status": to, "reason": reason})
    return Transition(channel_id, key_id, expected, to, reason)


def channel_verdict(results: list[ProbeResult]) -> Verdict:
    """A channel passes when any key passes; fails when it is down or refuses every key."""
    verdicts = {r.verdict for r in results}
    if Verdict.PASS in verdicts:
        return Verdict.PASS
    if Verdict.CHANNEL_FAIL in verdicts or (results and verdicts == {Verdict.KEY_FAIL}):
        return Verdict.CHANNEL_FAIL
    return Verdict.UNPROBEABLE if verdicts == {Verdict.UNPROBEABLE} else Verdict.INCONCLUSIVE


def key_passed(result: ProbeResult, channel: Verdict) -> bool | None:
    """What one key's probe says about the key itself. A refusal of the key is its failure; so is a
    channel-level failure (5xx, a broken answer) when a sibling key passed in the same run — the
    channel served, this key did not. When no key passed the channel is the one failing, and the
    key's record is left alone."""
    if result.verdict is Verdict.PASS:
        return True
    if result.verdict is Verdict.KEY_FAIL:
        return False
    if result.verdict is Verdict.CHANNEL_FAIL and channel is Verdict.PASS:
        return False
    return None


def _count(row, passed: bool | None, result: ProbeResult | None) -> tuple[int, int]:
    """Update a row's consecutive probe counters; None leaves them (the result says nothing)."""
    if passed is True:
        row.probe_failures, row.probe_passes = 0, row.probe_passes + 1
    elif passed is False:
        row.probe_failures, row.probe_passes = row.probe_failures + 1, 0
    if result is not None:
        row.probed_at, row.probe_latency_ms, row.probe_message = utcnow(), result.latency_ms, result.message
    return row.probe_failures, row.probe_passes


def _decide(row_type, row, channel_id: int, counts: tuple[int, int], settings: ProbeSettings, why: str) -> Transition | None:
    failures, passes = counts
    if row.status == ENABLED and failures >= settings.disable_after:
        return _cas(row_type, row.id, channel_id, ENABLED, AUTO, f"probe failed {failures} times in a row — {why}", HEALTH)
    if row.status == AUTO and passes >= settings.enable_after:
        return _cas(row_type, row.id, channel_id, AUTO, ENABLED, f"probe passed {passes} times in a row", HEALTH)
    return None


def apply_probe(channel_id: int, results: list[ProbeResult], settings: ProbeSettings) -> list[Transition]:
    """Fold one probe run of a channel into its state, all in one transaction."""
    channel = db.session.get(Channel, channel_id, populate_existing=True)
    if channel is None or channel.status == DISABLED:
        return []
    transitions: list[Transition] = []
    keys = {k.id: k for k in channel.keys}
    verdict = channel_verdict(results)
    for result in results:
        key = keys.get(result.key_id)
        if key is None or key.status == DISABLED:
            continue
        counts = _count(key, key_passed(result, verdict), result)
        transitions.append(_decide(ChannelKey, key, channel.id, counts, settings, f"upstream said: {result.message}"))
    failing = [r for r in results if r.verdict in (Verdict.CHANNEL_FAIL, Verdict.KEY_FAIL)]
    summary = failing[-1].message if failing else (results[-1].message if results else "")
    counts = _count(channel, {Verdict.PASS: True, Verdict.CHANNEL_FAIL: False}.get(verdict), results[-1] if results else None)
    if verdict is Verdict.UNPROBEABLE:
        channel.probe_message = f"cannot be probed: {summary}"
    transitions.append(_decide(Channel, channel, channel.id, counts, settings, f"upstream said: {summary}"))
    found = [t for t in transitions if t is not None]
    commit(publish=bool(found))
    return found


def apply_report(channel_id: int, key_id: int, kind: str, message: str, at: float) -> list[Transition]:
    """A relay saw this key refused as dead: disable it now, and its channel when no key is left.

    A report older than the key's last state change is stale (an operator re-enabled it since)."""
    key = db.session.get(ChannelKey, key_id, populate_existing=True)
    if key is None or key.channel_id != channel_id:
        return []
    reported = datetime.fromtimestamp(at, tz=timezone.utc)
    reason = f"upstream said: {message or kind}"[:500]
    transitions = [_cas(ChannelKey, key_id, channel_id, ENABLED, AUTO, reason, RELAY, ChannelKey.status_since < reported)]
    if transitions[0] is not None:
        others = db.session.scalars(select(ChannelKey.status).where(ChannelKey.channel_id == channel_id, ChannelKey.id != key_id))
        if not any(status == ENABLED for status in others):
            transitions.append(_cas(Channel, channel_id, channel_id, ENABLED, AUTO, f"every key is disabled — {reason}", RELAY))
    found = [t for t in transitions if t is not None]
    commit(publish=bool(found))
    return found


def probe_targets() -> list[int]:
    """Channels the scheduled probe looks at: enabled and auto-disabled (never operator-disabled)."""
    return list(db.session.scalars(select(Channel.id).where(Channel.status.in_((ENABLED, AUTO))).order_by(Channel.id)))


def channel_view(channel: Channel, decrypt, statuses: tuple[str, ...] | None = (ENABLED, AUTO)) -> tuple[ChannelView, list[ChannelKeyView]]:
    """The channel as the relay's adapters want it, and its keys to probe (decrypted)."""
    keys = [ChannelKeyView(id=k.id, secret=decrypt(k.secret_encrypted), status=k.status)
            for k in channel.keys if statuses is None or k.status in statuses]
    view = ChannelView(id=channel.id, name=channel.name, type=channel.type, base_url=channel.base_url,
                       models=tuple(channel.models or ()), keys=tuple(keys), model_map=dict(channel.model_map or {}),
                       groups=tuple(channel.groups or ()), config=load_config(channel.type, channel.config), status=channel.status)
    return view, keys


def record_test(channel_id: int, results: list[ProbeResult]) -> None:
    """Keep what "Test now" saw as the channel's last test (time, response time, message), for the
    channel list. The probe counters and the state are the scheduled health check's: untouched."""
    channel = db.session.get(Channel, channel_id)
    if channel is None or not results:
        return
    shown = next((r for r in results if r.verdict is Verdict.PASS), results[-1])
    channel.probed_at, channel.probe_latency_ms, channel.probe_message = utcnow(), shown.latency_ms, shown.message
    db.session.commit()


def test_channel(channel_id: int) -> list[ProbeResult]:
    """The console's "Test now": the scheduled probe on every key of the channel, whatever its state.
    It changes no state — it answers how the channel is doing right now, and how fast (`record_test`
    keeps that answer as the channel's last test)."""
    from controlplane.runtime import runtime
    from controlplane.services.channels import channel_by_id
    from controlplane.services.probes import probe_channel, probe_client

    rt = runtime()
    view, keys = channel_view(channel_by_id(channel_id), rt.cipher.decrypt, statuses=None)
    db.session.rollback()  # nothing is written; no transaction stays open through the probes
    return probe_channel(probe_client(rt.egress(), pool_size=4), view, keys, rt.settings.probe.timeout_seconds, budget_seconds=120)
