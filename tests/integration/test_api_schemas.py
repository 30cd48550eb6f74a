"""Schemathesis drives the admin API and the relay from their own OpenAPI documents: no 500, no
status code the document does not list, answers of the declared content type and shape. Bounded
(a few examples per operation, derandomized) so it runs in every `make test`."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as openapi_checks

from werkzeug.test import Client

from controlplane.api.spec import document
from controlplane.services import api_tokens, prices
from relay.openapi import document as relay_document
from relay.settings import Timeouts
from tests import factories
from tests.conftest import clean_tables
from tests.console import person
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI
from tests.relay_harness import Relay



@schemathesis.check
def no_internal_error(ctx, response, case):
    """A 500 is a bug. (Schemathesis' own not_a_server_error refuses every 5xx, but the relay's 501-504
    are documented answers about upstreams.)"""
    if response.status_code == 500:
        raise AssertionError(f"500 Internal Server Error: {response.text[:500]}")


CHECKS = [no_internal_error, openapi_checks.status_code_conformance, openapi_checks.content_type_conformance,
          openapi_checks.response_schema_conformance]
BOUNDED = settings(max_examples=10, derandomize=True, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

admin = schemathesis.openapi.from_dict(document())


def operations(schema):
    """One pytest parameter per operation, named by it. (Schemathesis' own `parametrize()` gives every
    operation the same node id, and pytest-xdist then runs only one of them.)"""
    found = [result.ok() for result in schema.get_all_operations()]
    return pytest.mark.parametrize("operation", found, ids=[operation.label for operation in found])


def conforms(operation, app, secret) -> None:
    @BOUNDED
    @given(case=operation.as_strategy())
    def check(case):
        case.call_and_validate(app=app, headers={"Authorization": f"Bearer {secret}"}, checks=CHECKS)

    check()


@pytest.fixture(scope="module")
def admin_api(sqlite_app, redis_slot):
    redis_slot.client.flushdb()
    clean_tables(sqlite_app)
    with sqlite_app.app_context():
        _, secret = api_tokens.create_token(factories.ACTOR, person("admin", "fuzz@example.com"), "schemathesis")
    return sqlite_app, secret


@operations(admin)
def test_admin_api_conforms_to_its_document(operation, admin_api):
    conforms(operation, *admin_api)


# --- the relay -------------------------------------------------------------------------------------
relay_schema = schemathesis.openapi.from_dict(relay_document())
OPENAI_MODELS = ("gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small", "omni-moderation-latest", "dall-e-3", "tts-1", "whisper-1")


@pytest.fixture(scope="module")
def relay_world(sqlite_app, redis_slot):
    """A funded key, and the document's example models served by fake upstreams of each format."""
    redis_slot.client.flushdb()
    clean_tables(sqlite_app)
    fakes = FakeOpenAI(models=list(OPENAI_MODELS)), FakeAnthropic(), FakeGemini()
    with sqlite_app.app_context():
        for model in ("gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small", "claude-sonnet-4-5", "gemini-2.5-flash"):
            factories.price(model, input="3", output="15")
        prices.set_price(factories.ACTOR, "dall-e-3", per_image="0.05", enforce_notice=False)
        prices.set_price(factories.ACTOR, "tts-1", per_1m_chars="15", enforce_notice=False)
        prices.set_price(factories.ACTOR, "whisper-1", per_minute_audio="0.006", enforce_notice=False)
        prices.set_price(factories.ACTOR, "omni-moderation-latest", per_request="0.0001", enforce_notice=False)
        factories.channel(fakes[0].url, models=OPENAI_MODELS)
        factories.channel(fakes[1].url, models=("claude-sonnet-4-5",), type="anthropic")
        factories.channel(fakes[2].url, models=("gemini-2.5-flash",), type="gemini")
        _, secret = factories.api_key(factories.funded_user("100"))
        relay = Relay(sqlite_app, timeouts=Timeouts(connect=1.0, first_byte=3.0, idle=2.0, total=5.0))
    relay.app.holder.refresh()
    yield relay.app, secret
    for fake in fakes:
        fake.close()


@operations(relay_schema)
def test_relay_conforms_to_its_document(operation, relay_world):
    conforms(operation, *relay_world)


def test_the_documents_are_served(admin_api, relay_world):
    """What the tests drive is what callers read."""
    app, _ = admin_api
    assert app.test_client().get("/admin/api/openapi.json").json == document()
    relay, _ = relay_world
    served = Client(relay).get("/v1/openapi.json")
    assert served.status_code == 200 and served.json == relay_document()
    assert {p for p in relay_document()["paths"]} >= {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages",
                                                     "/v1/messages/count_tokens", "/v1/models", "/v1/responses", "/v1/images/generations",
                                                     "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/translations",
                                                     "/v1/moderations", "/v1beta/models/{model}:generateContent", "/v1/generation",
                                                     "/v1/key", "/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage"}
