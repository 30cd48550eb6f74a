"""Operator console: "Test now" on a channel — the scheduled health probe, run on demand.

POST /admin/channels/<id>/test answers JSON to JSON callers, an HTML fragment to htmx (the channel
page swaps it in place), and a small page otherwise, so the button works without JavaScript.
"""
from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template_string, request

from controlplane.admin import WRITERS
from controlplane.auth import require_roles, wants_json
from controlplane.services import ServiceError
from controlplane.services.channel_health import test_channel

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
    if wants_json():
        passed = [r for r in results if r.ok]
        return jsonify(channel_id=channel_id, ok=bool(passed), latency_ms=passed[0].latency_ms if passed else None,
                       results=[r.as_dict() for r in results])
    fragment = render_template_string(FRAGMENT, results=results, keys=keys)
    if request.headers.get("HX-Request"):
        return fragment
    return render_template_string(PAGE, fragment=fragment, name=name, channel_id=channel_id)
