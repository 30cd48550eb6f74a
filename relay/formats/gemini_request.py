"""OpenAI chat request → Gemini generateContent request (for Gemini upstreams).

System and developer messages become `systemInstruction`; assistant turns are role "model"; tool
results are `functionResponse` parts of a user turn, named after the call they answer (Gemini
matches by name, OpenAI by id); consecutive turns of one role are merged.
"""
from __future__ import annotations

import mimetypes
from typing import Any

import orjson

from relay.errors import RelayError, bad_request
from relay.formats.common import parse_data_url, text_parts, tool_input
from relay.formats.gemini_wire import split_call_id
from relay.formats.schema import clean_schema

THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
AUDIO_MIME: dict[str | None, str] = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg", "aac": "audio/aac"}


def unsupported(what: str) -> RelayError:
    return RelayError(501, "conversion_not_supported", f"{what} cannot be sent to this model's provider (Gemini).")


def media_part(url: object) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise bad_request("An image_url must be an http(s) URL or a base64 data URL.", param="messages")


def content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(media_part(image.get("url") if isinstance(image, dict) else image))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": AUDIO_MIME.get(audio.get("format"), "audio/wav"), "data": audio.get("data") or ""}})
        elif kind == "file":
            data = parse_data_url((part.get("file") or {}).get("file_data") or "")
            if data is None:
                raise unsupported("A file part without inline data")
            parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
    return parts


def model_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts = [{"text": t} for t in text_parts(message.get("content")) if t]
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        _, signature = split_call_id(call.get("id"))
        part: dict[str, Any] = {"functionCall": {"name": fn.get("name") or "", "args": tool_input(fn.get("arguments"))}}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def tool_response_parts(message: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """A tool message as a functionResponse (an object: JSON results as they are, text under
    "content") followed by any images it carries."""
    content = message.get("content")
    text = "".join(text_parts(content))
    try:
        result = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        result = None
    response = result if isinstance(result, dict) else {"content": text}
    name = names.get(message.get("tool_call_id") or "") or message.get("name") or ""
    media = [p for p in content_parts(content) if "text" not in p] if isinstance(content, list) else []
    return [{"functionResponse": {"name": name, "response": response}}, *media]


def convert_messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the responses that follow
    for message in messages:
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object.", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": t} for t in text_parts(message.get("content")) if t)
            continue
        if role == "user":
            turn, parts = "user", content_parts(message.get("content"))
        elif role == "assistant":
            for call in message.get("tool_calls") or ():
                names[call.get("id") or ""] = (call.get("function") or {}).get("name") or ""
            turn, parts = "model", model_parts(message)
        elif role in ("tool", "function"):
            turn, parts = "user", tool_response_parts(message, names)
        else:
            raise bad_request(f"Unknown message role '{role}'.", param="messages")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def convert_tools(tools: list[Any]) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise unsupported(f"A tool of type '{tool.get('type') if isinstance(tool, dict) else tool}'")
        fn = tool.get("function") or {}
        declaration = {"name": fn.get("name") or ""}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        parameters = clean_schema(fn.get("parameters")) if fn.get("parameters") else None
        if parameters and parameters.get("properties"):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def tool_config(choice: Any) -> dict[str, Any] | None:
    if choice in ("auto", "none"):
        return {"functionCallingConfig": {"mode": choice.upper()}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}}
    if choice is not None:
        raise bad_request("tool_choice must be 'auto', 'none', 'required' or a named function.", param="tool_choice")
    return None


def generation_config(payload: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                           ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if isinstance(payload.get(source), (int, float)) and not isinstance(payload.get(source), bool):
            config[target] = payload[source]
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = payload.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
    if stops:
        config["stopSequences"] = stops
    if isinstance(payload.get("n"), int) and payload["n"] > 1:
        config["candidateCount"] = payload["n"]
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = clean_schema(schema)
    budget = THINKING_BUDGETS.get(str(payload.get("reasoning_effort") or ""))
    if budget:
        config["thinkingConfig"] = {"thinkingBudget": budget}
    return config


def chat_to_gemini(payload: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat payload. Fields with no counterpart (logprobs,
    logit_bias, user, parallel_tool_calls) are dropped."""
    system, contents = convert_messages(payload["messages"])
    if not contents:
        raise bad_request("The conversation has no user or assistant content to send.", param="messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if payload.get("tools"):
        body["tools"] = convert_tools(payload["tools"])
        config = tool_config(payload.get("tool_choice"))
        if config:
            body["toolConfig"] = config
    config = generation_config(payload)
    if config:
        body["generationConfig"] = config
    return body
