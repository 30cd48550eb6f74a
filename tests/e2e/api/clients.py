"""The conformance matrix's two clients, the official `openai` and `anthropic` SDKs, each running a
scenario the way customer code does and reporting what it saw in one comparable shape."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import anthropic
import openai

from tests.e2e.api.conformance import PIXEL


@dataclass
class Answer:
    text: str
    calls: list[tuple[str, str, dict]]  # (id, name, arguments)
    stop: str  # in the client's own vocabulary
    usage: tuple  # the client's own usage numbers, see `seen_usage`
    request_id: str
    reasoning: str = ""
    extra: dict = field(default_factory=dict)


# --- OpenAI SDK -----------------------------------------------------------------------------
def openai_client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def openai_usage(usage) -> tuple:
    return (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens,
            usage.completion_tokens_details.reasoning_tokens)


def openai_chat(client: openai.OpenAI, model: str, messages: list, stream: bool, **options) -> Answer:
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **options)
        completion = raw.parse()
        message = completion.choices[0].message
        calls = [(t.id, t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls or ()]
        return Answer(message.content or "", calls, completion.choices[0].finish_reason, openai_usage(completion.usage),
                      raw.headers["x-request-id"])
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True,
                                                           stream_options={"include_usage": True}, **options)
    text, finish, usage, calls = [], None, None, {}
    for chunk in raw.parse():
        if chunk.usage is not None:
            usage = openai_usage(chunk.usage)
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
    parsed = [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    return Answer("".join(text), parsed, finish, usage, raw.headers["x-request-id"])


def openai_scenario(name: str) -> tuple[list, dict]:
    """(messages, options) of a scenario's first turn, in OpenAI format."""
    if name == "image":
        return [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}], {}
    if name == "tools":
        return [{"role": "user", "content": "Weather and time in Zürich?"}], {"tools": OPENAI_TOOLS}
    if name == "length":
        return [{"role": "user", "content": "Tell a long story."}], {"max_tokens": 5}
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], {}


def openai_tool_turn(messages: list, answer: Answer, results: dict) -> list:
    calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in answer.calls]
    return messages + [{"role": "assistant", "content": None, "tool_calls": calls}] + [
        {"role": "tool", "tool_call_id": i, "content": json.dumps(results[n])} for i, n, _ in answer.calls]


OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                                                     "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": ["string", "null"]}}}}},
]


# --- Anthropic SDK --------------------------------------------------------------------------
def anthropic_client(origin: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=origin, api_key=key, max_retries=0, timeout=30)


def anthropic_usage(usage) -> tuple:
    return (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.output_tokens)


def anthropic_chat(client: anthropic.Anthropic, model: str, messages: list, stream: bool, **options) -> Answer:
    options.setdefault("max_tokens", 1000)
    if not stream:
        raw = client.messages.with_raw_response.create(model=model, messages=messages, **options)
        message = raw.parse()
        request_id = raw.headers["x-request-id"]
    else:
        with client.messages.stream(model=model, messages=messages, **options) as events:
            message = events.get_final_message()
            request_id = events.response.headers["x-request-id"]
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    reasoning = "".join(b.thinking for b in message.content if b.type == "thinking")
    return Answer(text, calls, message.stop_reason, anthropic_usage(message.usage), request_id, reasoning)


def anthropic_scenario(name: str) -> tuple[list, dict]:
    if name == "image":
        return [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                             {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}]}], {}
    if name == "tools":
        return [{"role": "user", "content": "Weather and time in Zürich?"}], {"tools": ANTHROPIC_TOOLS}
    if name == "length":
        return [{"role": "user", "content": "Tell a long story."}], {"max_tokens": 5}
    return [{"role": "user", "content": "Hi"}], {"system": "Be brief."}


def anthropic_tool_turn(messages: list, answer: Answer, results: dict) -> list:
    uses = [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in answer.calls]
    outcomes = [{"type": "tool_result", "tool_use_id": i, "content": json.dumps(results[n])} for i, n, _ in answer.calls]
    return messages + [{"role": "assistant", "content": uses}, {"role": "user", "content": outcomes}]


ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "Weather in a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                      "required": ["city"]}},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}},
]

# The vocabulary each client reads stop reasons in, by OpenAI finish reason.
STOP_WORDS = {"openai": {"stop": "stop", "tool_calls": "tool_calls", "length": "length"},
              "anthropic": {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}}


def seen_usage(client: str, usage) -> tuple:
    """What a client must see for normalised `usage` (relay.pricing.Usage)."""
    if client == "openai":
        return (usage.input + usage.cache_read + usage.cache_write, usage.cache_read, usage.output + usage.reasoning, usage.reasoning)
    return (usage.input, usage.cache_read, usage.cache_write, usage.output + usage.reasoning)
