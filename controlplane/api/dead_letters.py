"""Admin API: usage events ingestion could not write — list, read, retry, discard."""
from __future__ import annotations

from flask import jsonify, request

from controlplane import dead_letters
from controlplane.api import READERS, WRITERS, actor, route
from controlplane.api.schema import INT, STR, described
from controlplane.queries.pagination import per_page
from controlplane.runtime import runtime
from controlplane.services import dead_letters as dead_letter_service

TAG = "ingestion"


@route("/v1/dead-letters", "GET", summary="Usage events the database refused, newest first; continue with before=next_before", tag=TAG,
       roles=READERS, query={"before": described(STR, "a dead letter's id"), "per_page": INT})
def list_dead_letters():
    letters, next_before = dead_letters.newest(runtime().redis, request.args.get("before"), per_page(request.args))
    return jsonify(data=[letter.as_dict() for letter in letters], next_before=next_before, total=dead_letters.count(runtime().redis))


@route("/v1/dead-letters/<entry_id>", "GET", summary="One dead letter with its event", tag=TAG, roles=READERS)
def get_dead_letter(entry_id: str):
    return jsonify(dead_letter_service.letter(entry_id).as_dict())


@route("/v1/dead-letters/<entry_id>/retry", "POST", summary="Put a dead letter back on the usage stream (written once)", tag=TAG,
       roles=WRITERS)
def retry_dead_letter(entry_id: str):
    return jsonify(dead_letter_service.retry(actor(), entry_id).as_dict())


@route("/v1/dead-letters/<entry_id>", "DELETE", summary="Discard a dead letter; its charge goes back to the live balance", tag=TAG,
       roles=WRITERS, status=204)
def discard_dead_letter(entry_id: str):
    dead_letter_service.discard(actor(), entry_id)
    return "", 204
