"""Admin API: disruption credits — preview each affected account's pro-rata credit, post the batch
once, list and read batches."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from controlplane.api import READERS, WRITERS, actor, payload, route
from controlplane.api.schema import INT, PAGE, STR, USD, WHEN, arr, described, obj
from controlplane.models import DisruptionCredit
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.services import disruption
from controlplane.validation import timestamp, usd

SCOPE = dict(starts_at=WHEN, ends_at=WHEN, models=arr(STR), channel_ids=arr(INT))


def _plan(data: dict) -> disruption.CreditPlan:
    starts = timestamp(str(data.get("starts_at") or ""), "starts_at")
    ends = timestamp(str(data.get("ends_at") or ""), "ends_at")
    return disruption.preview(starts, ends, data.get("models") or [], data.get("channel_ids") or [])


def _plan_dict(plan: disruption.CreditPlan) -> dict:
    return {"starts_at": plan.starts_at.isoformat(), "ends_at": plan.ends_at.isoformat(), "models": list(plan.models),
            "channel_ids": list(plan.channel_ids), "total_micro_usd": plan.total,
            "lines": [{"account_id": x.account_id, "name": x.name, "usage_micro_usd": x.usage, "amount_micro_usd": x.amount} for x in plan.lines]}


@route("/v1/disruption-credits/preview", "POST", summary="Preview each affected account's credit for a disruption (writes nothing)",
       tag="money", roles=READERS, body=obj(("starts_at", "ends_at"), **SCOPE))
def preview_disruption_credit():
    return jsonify(_plan_dict(_plan(payload())))


@route("/v1/disruption-credits", "POST", summary="Post a disruption's credits in one batch (once per period and scope)", tag="money",
       roles=WRITERS, status=201,
       body=obj(("starts_at", "ends_at", "reason"), **SCOPE, reason=described(STR, "Customers see it"),
                expected_total_usd=described(USD, "The preview's total: refused if the amounts changed")))
def post_disruption_credit():
    data = payload()
    plan = _plan(data)
    expected = data.get("expected_total_usd")
    batch = disruption.post(actor(), plan, str(data.get("reason") or ""),
                            expected_total=None if expected in (None, "") else usd(str(expected), "expected_total_usd"))
    return jsonify(disruption.describe(batch)), 201


@route("/v1/disruption-credits", "GET", summary="Disruption credits posted, newest first", tag="money", roles=READERS, query=PAGE)
def list_disruption_credits():
    page = paginate(select(DisruptionCredit).order_by(DisruptionCredit.id.desc()), page_number(request.args), per_page(request.args))
    return jsonify(data=[disruption.describe(b) for b in page.items], **page.meta())


@route("/v1/disruption-credits/<int:credit_id>", "GET", summary="One disruption credit and its lines", tag="money", roles=READERS)
def get_disruption_credit(credit_id: int):
    batch = disruption.batch_by_id(credit_id)
    lines = [{"account_id": line.account_id, "name": name, "usage_micro_usd": line.usage, "amount_micro_usd": line.amount,
              "ledger_entry_id": line.ledger_entry_id} for line, name in disruption.lines_of(batch.id)]
    return jsonify(disruption.describe(batch) | {"lines": lines})


