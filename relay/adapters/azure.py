"""Azure OpenAI: the OpenAI wire format behind deployments, an `api-version` and an `api-key` header.

The channel's base URL is the resource endpoint (https://NAME.openai.azure.com); the upstream model
name (after the channel's model mapping) is the deployment. The channel config may set
`api_version` (default below) and `responses_api_version` for /v1/responses, which Azure serves
outside the deployment path.
"""
from __future__ import annotations

from urllib.parse import quote

from relay.adapters.base import AdapterInfo, Operation, Target
from relay.adapters.openai import PATHS, OpenAIAdapter
from relay.channel_config import DEFAULT_API_VERSION, DEFAULT_RESPONSES_API_VERSION, AzureConfig
from relay.snapshot import ChannelKeyView, ChannelView



def resource_base(channel: ChannelView) -> str:
    """The resource endpoint, whether the operator pasted it with or without /openai."""
    base = channel.base_url.rstrip("/")
    return base[: -len("/openai")] if base.endswith("/openai") else base


class AzureAdapter(OpenAIAdapter):
    info = AdapterInfo(
        type="azure",
        label="Azure OpenAI",
        capabilities=frozenset({
            Operation.CHAT, Operation.MESSAGES, Operation.COUNT_TOKENS, Operation.GENERATE_CONTENT, Operation.COMPLETIONS, Operation.EMBEDDINGS,
            Operation.IMAGES, Operation.SPEECH, Operation.TRANSCRIPTION, Operation.RESPONSES,
        }),
    )

    def headers(self, key: ChannelKeyView, content_type: str = "application/json") -> dict[str, str]:
        return {"api-key": key.secret, "Content-Type": content_type, "Accept-Encoding": "identity"}

    def operation_url(self, target: Target, operation: Operation, path: str | None = None) -> str:
        channel = target.channel
        config = channel.config if isinstance(channel.config, AzureConfig) else None
        if operation is Operation.RESPONSES:
            version = config.responses_api_version if config else DEFAULT_RESPONSES_API_VERSION
            return f"{resource_base(channel)}/openai/responses?api-version={quote(version)}"
        version = config.api_version if config else DEFAULT_API_VERSION
        deployment = quote(target.upstream_model, safe="")
        return f"{resource_base(channel)}/openai/deployments/{deployment}{path or PATHS[operation]}?api-version={quote(version)}"
