"""A fake Azure OpenAI resource: the OpenAI fake behind /openai/deployments/{deployment}/… (and
/openai/responses), requiring an `api-key` header and an `api-version` query parameter.

Azure speaks OpenAI's wire format, so after checking what is Azure's own the request is served by
the OpenAI fake's handler; `azure_requests` keeps what arrived as it arrived.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs

from tests.fakes.openai_server import FakeOpenAI, OpenAIHandler

DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(/.+)$")


class AzureHandler(OpenAIHandler):
    def do_POST(self):
        path, _, query = self.path.partition("?")
        version = parse_qs(query).get("api-version", [None])[0]
        key = self.headers.get("api-key")
        match = DEPLOYMENT.match(path)
        self.fake.azure_requests.append({"path": path, "api_version": version, "api_key": key,
                                         "deployment": match.group(1) if match else None})
        if not key:
            return self.send_json(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}})
        if not version:
            return self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if match:
            upstream_path = "/v1" + match.group(2)
        elif path == "/openai/responses":
            upstream_path = "/v1/responses"
        else:
            return self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
        self.path = upstream_path
        del self.headers["Authorization"]
        self.headers["Authorization"] = f"Bearer {key}"  # the OpenAI handler below checks a bearer
        return super().do_POST()


class FakeAzure(FakeOpenAI):
    handler_class = AzureHandler

    def __init__(self, models: list[str] | None = None):
        super().__init__(models)
        self.azure_requests: list[dict] = []

    @property
    def url(self) -> str:
        return self.origin
