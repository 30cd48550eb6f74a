"""Operator console: "Test now" on a channel — the scheduled health probe, run on demand — and
"Test all channels", the scheduled health check started now.

POST /admin/channels/<id>/test answers JSON to JSON callers, an HTML fragment to htmx (the channel
page swaps the per-key results in place; the list, with `?compact=1`, its "Last test" cell), and a
small page otherwise, so the button works without JavaScript. The result is kept as the channel's
last test (response time and time), which the list shows.
"""
from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template_string, request, url_for

from controlplane.admin import WRITERS
from controlplane.auth import require_roles, wants_json
from controlplane.services import ServiceError
from controlplane.services.channel_health import record_test, test_channel
from controlplane.services.probes import Verdict

bp = Blueprint("channel_probe", __name__, url_prefix="/channels")

FRAGMENT = """
<div class="probe-result" role="status" aria-live="polite">
  {% if not results %}<p>No keys to test — add one first.</p>{% endif %}
  <ul>
  {% for r in results %}
    <li>
      <span class="state state-{{ 'enabled' if r.ok else 'auto_disabled' }}">{{ 'passed' if r.ok else r.verdict.value | replace('_', ' ') }}</span>
      {% if r.key_id %}key {{ keys.get(r.key_id, r.key_id) }}{% endif %}
      {% if r.operation %}· {{ r.operation }} {{ r.model }}{% endif %}
      {# a probe that passed was timed: under a millisecond shows as such, not as nothing #}
      {% if r.ok or r.latency_ms %}· <span class="num">{{ r.latency_ms or '<1' }} ms</span>{% endif %}
      {% if not r.ok %}— {{ r.message }}{% endif %}
    </li>
  {% endfor %}
  </ul>
</div>
"""

COMPACT = """<span class="state state-{{ 'enabled' if ok else 'auto-disabled' }}">{{ 'passed' if ok else 'failed' }}</span>
{% if shown %}<span class="num">{{ shown.latency_ms or '<1' }} ms</span><br><small>just now</small>
{%- if not ok %} <small class="reason">{{ shown.message }}</small>{% endif %}
{%- else %}no keys to test{% endif %}"""

PAGE = """{% extends "base.html" %}
{% block title %}Test {{ name }}{% endblock %}
{% block content %}<h1>Test of {{ name }}</h1>{{ fragment | safe }}
<p><a href="{{ url_for('admin.channels.detail', channel_id=channel_id) }}">Back to the channel</a></p>{% endblock %}
"""


@bp.post("/<int:channel_id>/test")
@require_roles(*WRITERS)
def test_now(channel_id: int):
    from controlplane.services.channels import channel_by_id

    try:
        channel = channel_by_id(channel_id)
    except ServiceError:
        abort(404)
    name, keys = channel.name, {k.id: k.masked for k in channel.keys}
    results = test_channel(channel_id)
    record_test(channel_id, results)
    if wants_json():
        passed = [r for r in results if r.ok]
        return jsonify(channel_id=channel_id, ok=bool(passed), latency_ms=passed[0].latency_ms if passed else None,
                       results=[r.as_dict() for r in results])
    if request.headers.get("HX-Request") and request.args.get("compact"):
        shown = next((r for r in results if r.verdict is Verdict.PASS), results[-1] if results else None)
        return render_template_string(COMPACT, ok=shown is not None and shown.ok, shown=shown)
    fragment = render_template_string(FRAGMENT, results=results, keys=keys)
    if request.headers.get("HX-Request"):
        return fragment
    return render_template_string(PAGE, fragment=fragment, name=name, channel_id=channel_id)


@bp.post("/test-all")
@require_roles(*WRITERS)
def test_all():
    """Start the scheduled health check now, on its own worker: every enabled and auto-disabled
    channel is probed (and its state follows the results, as on schedule)."""
    from rq import Queue

    from controlplane.runtime import runtime
    from workers import queues

    Queue(queues.PROBE, connection=runtime().queue_redis).enqueue("workers.health.scheduled_probe", job_timeout=queues.PROBE_TIMEOUT)
    flash("Testing every enabled and auto-disabled channel now. Each row's “Last test” shows its response time as it finishes; "
          "reload to see them.")
    return redirect(url_for("admin.channels.index"))
