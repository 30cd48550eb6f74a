"""Admin API: model prices — current and scheduled, set, cancel, export, import, unpriced."""
from __future__ import annotations

from flask import jsonify

from controlplane.api import WRITERS, actor, payload, route
from controlplane.api.schema import ANY, INT, STR, USD, WHEN, described, obj
from controlplane.price_fields import PRICE_FIELDS
from controlplane.services import price_admin, prices as price_service
from controlplane.validation import timestamp

PRICE_BODY = obj(("model", "input", "output"), model=STR, **{f.name: described(USD, f"{f.label}, {f.unit}. {f.hint}".strip()) for f in PRICE_FIELDS},
                 max_output_tokens=INT, effective_from=described(WHEN, "Default: now; a priced model needs 7 days' notice or a reason"),
                 reason=STR)


def _when(value):
    return timestamp(value, "effective_from") if value else None


@route("/v1/prices", "GET", summary="Current and scheduled prices (µ$ per 1M tokens)", tag="prices")
def list_prices():
    return jsonify(data=[price_service.describe(r) for r in price_admin.visible_rows()], unpriced=price_admin.unpriced_models())


@route("/v1/prices", "POST", summary="Set or schedule a model's price", tag="prices", roles=WRITERS, status=201, body=PRICE_BODY)
def set_price():
    data = payload()
    prices = {f.name: (None if data.get(f.name) is None else str(data[f.name])) for f in PRICE_FIELDS}
    row = price_service.set_price(actor(), str(data.get("model") or ""), **prices, max_output_tokens=data.get("max_output_tokens"),
                                  effective_from=_when(data.get("effective_from")), reason=data.get("reason"))
    return jsonify(price_service.describe(row)), 201


@route("/v1/prices/<int:price_id>", "DELETE", summary="Cancel a scheduled price", tag="prices", roles=WRITERS, status=204)
def cancel_price(price_id: int):
    price_admin.cancel_scheduled(actor(), price_id)
    return "", 204


@route("/v1/prices/export", "GET", summary="The price list as an import document (USD strings)", tag="prices")
def export_prices():
    return jsonify(price_admin.export_document())


@route("/v1/prices/import", "POST", summary="Import prices, all or nothing", tag="prices", roles=WRITERS,
       body=obj(("document",), document=ANY, effective_from=WHEN, reason=STR))
def import_prices():
    data = payload()
    created = price_admin.import_prices(actor(), data.get("document"), _when(data.get("effective_from")), data.get("reason"))
    return jsonify(created=[price_service.describe(r) for r in created])


@route("/v1/prices/unpriced", "GET", summary="Models served by enabled channels with no price (not routable)", tag="prices")
def unpriced():
    return jsonify(models=price_admin.unpriced_models())

