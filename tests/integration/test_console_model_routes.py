"""Model routes in the operator console (the prices page): a model's selection strategy and
aliases that stand for a list of models — checked, audited, in the relays' snapshot at once, and
offered in the customer playground."""
from __future__ import annotations

from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import AuditEntry, ModelRoute
from controlplane.runtime import runtime
from relay import config_store
from tests import factories
from tests.console import as_operator, operator, post, text  # noqa: F401  (fixtures)
from tests.integration.console.conftest import client_for, person


def published_routes() -> dict:
    snap = config_store.load(runtime().redis, lambda secret: secret)
    return {m: r.to_payload() for m, r in snap.model_routes.items()} if snap is not None else {}


def test_an_alias_is_saved_audited_and_published(as_operator):
    factories.channel("https://a.example.com/v1", models=("gpt-4o", "gpt-4o-mini"))
    response = post(as_operator, "/admin/prices/routes", {"model": "smart", "strategy": "latency", "targets": "gpt-4o\ngpt-4o-mini"})
    assert response.status_code == 302
    row = db.session.scalar(select(ModelRoute))
    assert (row.model, row.strategy, row.targets) == ("smart", "latency", ["gpt-4o", "gpt-4o-mini"])
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "model_route.set")).after["targets"] == ["gpt-4o", "gpt-4o-mini"]
    assert published_routes()["smart"] == {"model": "smart", "strategy": "latency", "targets": ["gpt-4o", "gpt-4o-mini"]}
    page = text(as_operator.get("/admin/prices/"))
    assert "gpt-4o → gpt-4o-mini" in page and "Favour faster, healthier channels" in page


def test_bad_routes_are_refused_next_to_the_field(as_operator):
    post(as_operator, "/admin/prices/routes", {"model": "smart", "strategy": "priority", "targets": "a\nb"})
    for data, message in [
        ({"model": "x", "strategy": "fastest", "targets": ""}, "Not a valid choice"),
        ({"model": "loop", "strategy": "priority", "targets": "loop"}, "cannot stand for itself"),
        ({"model": "twice", "strategy": "priority", "targets": "a, a"}, "names each model once"),
        ({"model": "nested", "strategy": "priority", "targets": "smart"}, "not other aliases"),
        ({"model": "a", "strategy": "priority", "targets": "c"}, "Another alias stands for this model"),
        ({"model": "many", "strategy": "priority", "targets": "\n".join(f"m{i}" for i in range(9))}, "at most 8 models"),
    ]:
        response = post(as_operator, "/admin/prices/routes", data)
        assert response.status_code == 400 and message in text(response), data
    assert [r.model for r in db.session.scalars(select(ModelRoute))] == ["smart"]


def test_deleting_a_route_asks_first(as_operator):
    post(as_operator, "/admin/prices/routes", {"model": "smart", "strategy": "priority", "targets": "a\nb"})
    row = db.session.scalar(select(ModelRoute))
    asked = post(as_operator, f"/admin/prices/routes/{row.id}/delete")
    assert asked.status_code == 200 and "model not found" in text(asked)
    assert db.session.scalar(select(ModelRoute)) is not None
    assert post(as_operator, f"/admin/prices/routes/{row.id}/delete", confirm=True).status_code == 302
    assert db.session.scalar(select(ModelRoute)) is None and "smart" not in published_routes()


def test_the_playground_offers_an_alias_when_one_of_its_models_is_open(app, as_operator):
    factories.channel("https://api.example.com/v1", models=("gpt-4o-mini",))
    factories.price("gpt-4o-mini", input="0.15", output="0.60")
    post(as_operator, "/admin/prices/routes", {"model": "smart", "strategy": "priority", "targets": "gpt-4o\ngpt-4o-mini"})
    post(as_operator, "/admin/prices/routes", {"model": "closed", "strategy": "priority", "targets": "gpt-4o"})
    ana = person("ana@example.com", usd="10")
    factories.api_key(ana)
    page = text(client_for(app, ana).get("/playground/"))
    assert "<option>smart</option>" in page.replace('<option selected>', '<option>') and ">closed<" not in page


def test_the_cli_sets_lists_and_deletes_routes(app):
    import json

    from controlplane.cli.group import cli

    runner = app.test_cli_runner()
    made = runner.invoke(cli, ["route", "set", "smart", "--alias-for", "gpt-4o, gpt-4o-mini", "--strategy", "cost", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output.strip().splitlines()[-1])["targets"] == ["gpt-4o", "gpt-4o-mini"]
    listed = runner.invoke(cli, ["route", "list"])
    assert "smart: cost, alias for gpt-4o → gpt-4o-mini" in listed.output
    refused = runner.invoke(cli, ["route", "set", "loop", "--alias-for", "loop"])
    assert refused.exit_code != 0 and "cannot stand for itself" in str(refused.exception)  # `switchboard` prints it (controlplane/cli)
    assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "model_route.set")).actor == "cli"
    assert runner.invoke(cli, ["route", "delete", "smart"]).exit_code == 0
    assert db.session.scalar(select(ModelRoute)) is None and "smart" not in published_routes()
