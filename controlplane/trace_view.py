"""A request's decision trace (the steps the relay noted while routing it) as a timeline people
read: one line per step in words, with channel names, a tone (ok, failed, warning, info) and the
upstream's own words where there are some. Pure; unknown steps still show, as their fields."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from relay.pricing import usd_text

WHY = {  # the relay's reasons, in words
    "unsupported_endpoint": "does not support this endpoint", "no_enabled_key": "has no enabled key",
    "ejected": "ejected after recent failures", "cooling": "cooling down", "at_capacity": "at its concurrency limit",
    "rate_limited": "over its rate limit",
}


@dataclass(frozen=True, slots=True)
class TraceStep:
    title: str
    detail: str = ""
    tone: str = "info"  # ok | bad | warn | info
    said: str = ""  # what the upstream said, verbatim


def _when(value: Any) -> str:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%H:%M:%S UTC")
    return str(value)


def _why(value: Any) -> str:
    return WHY.get(str(value), str(value).replace("_", " "))


def describe(step: Any, channel_names: dict[int, str]) -> TraceStep:
    if not isinstance(step, dict):
        return TraceStep(str(step))

    def channel(cid: Any) -> str:
        return channel_names.get(cid, f"channel {cid}") if cid is not None else "a channel"

    kind = step.get("step")
    if kind == "candidates":
        ids = step.get("channels") or []
        detail = f"{len(ids)} channel{'s' if len(ids) != 1 else ''}: {', '.join(channel(c) for c in ids) or 'none'}"
        if step.get("routes") is not None:
            detail += f" · {step['routes']} route{'s' if step['routes'] != 1 else ''} (channel and key) in preference order"
        skipped = [f"{channel(c)} {_why(why)}" for c, why in (step.get("skipped") or [])]
        if skipped:
            detail += " · left out: " + "; ".join(skipped)
        return TraceStep("Candidates", detail)
    if kind == "pick":
        detail = "panic mode: every route was ejected, so one is tried anyway" if step.get("panic") else ""
        return TraceStep(f"Picked {channel(step.get('channel'))}, key #{step.get('key')}", detail, "warn" if step.get("panic") else "info")
    if kind == "skip":
        return TraceStep(f"Skipped {channel(step.get('channel'))}, key #{step.get('key')}", _why(step.get("why")), "warn")
    if kind == "attempt":
        number = int(step.get("n") or 0) + 1
        status = step.get("status")
        parts = [f"HTTP {status}" if status is not None else "no answer recorded"]
        if step.get("ms") is not None:
            parts.append(f"in {step['ms']:,} ms")
        if step.get("kind"):
            parts.append(str(step["kind"]).replace("_", " "))
        ok = isinstance(status, int) and status < 400
        return TraceStep(f"Attempt {number} on {channel(step.get('channel'))}, key #{step.get('key')}", " ".join(parts),
                         "ok" if ok else "bad", str(step.get("error") or ""))
    if kind == "health":
        result = step.get("result")
        bits = []
        if step.get("key_ejected_until"):
            bits.append(f"key ejected until {_when(step['key_ejected_until'])}")
        if step.get("channel_ejected_until"):
            bits.append(f"channel ejected until {_when(step['channel_ejected_until'])}")
        if step.get("cooling_until"):
            bits.append(f"cooling down until {_when(step['cooling_until'])}")
        return TraceStep(f"Health of {channel(step.get('channel'))}: {str(result).replace('_', ' ')}", "; ".join(bits),
                         "bad" if result == "failure" else "warn")
    if kind == "stop":
        return TraceStep("Stopped", _why(step.get("why")), "bad")
    if kind == "route":
        detail = "panic mode" if step.get("panic") else ""
        return TraceStep(str(step.get("result") or "no route").capitalize(), detail, "bad")
    if kind == "limit":
        detail = f"{step.get('scope')} over its {str(step.get('which')).replace('_', ' ')} limit"
        if step.get("retry_after"):
            detail += f"; retry after {step['retry_after']} s"
        return TraceStep("Refused by a rate limit", detail, "bad")
    if kind == "output_cap":
        detail = f"at {int(step.get('tokens') or 0):,} tokens"
        if isinstance(step.get("reserved"), int):
            detail += f", what the {usd_text(step['reserved'])} hold pays for"
        return TraceStep("Output capped", detail, "warn")
    if kind == "stream":
        failed = step.get("kind") is not None or "failed" in str(step.get("result"))
        return TraceStep(f"Stream: {step.get('result')}", str(step.get("kind") or "").replace("_", " "), "bad" if failed else "warn",
                         str(step.get("error") or ""))
    if kind == "affinity":
        via = {"prefix": "the conversation's opening (system, tools, first message)"}.get(str(step.get("via")), f"the caller's {step.get('via')}")
        said = {"kept": "stayed on the channel key that served it last", "moved": "moved: its last key could not serve, or a higher tier could",
                "new": "a new conversation, pinned to the route picked"}.get(str(step.get("result")), str(step.get("result")))
        return TraceStep("Prompt-cache affinity", f"{said} · named by {via}", "warn" if step.get("result") == "moved" else "info")
    if kind == "queue":
        result = step.get("result")
        if result == "served":
            return TraceStep("Waited for capacity", f"{int(step.get('waited_ms') or 0):,} ms in the queue, then served", "warn")
        if result in ("overflow", "full"):
            waited = f"{int(step.get('waited_ms') or 0):,} ms in the queue; " if result == "overflow" else "the queue was longer than the group waits; "
            return TraceStep("Capacity queue overflowed", f"{waited}told to retry after {step.get('retry_after')} s", "bad")
        return TraceStep("Queued for capacity", f"position {step.get('position')}, limit {step.get('limit_s')} s", "warn")
    if kind == "charge_cut":
        return TraceStep("Charge cut to what the hold allowed",
                         f"cost {usd_text(int(step.get('cost') or 0))}, charged {usd_text(int(step.get('charged') or 0))}", "warn")
    fields = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in step.items() if k != "step" and v is not None)
    return TraceStep(str(kind or "step").replace("_", " ").capitalize(), fields)


def timeline(trace: Any, channel_names: dict[int, str]) -> list[TraceStep]:
    return [describe(step, channel_names) for step in (trace or [])]
