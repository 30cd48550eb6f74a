"""Gemini generateContent request → OpenAI chat request, to serve Gemini-format callers through
OpenAI-shaped chat (openai, azure and, converted once more, anthropic channels).

`systemInstruction` becomes the system message; "model" turns become assistant messages whose
`functionCall` parts are tool calls; `functionResponse` parts become tool messages placed before
the rest of their user turn. Gemini matches a response to its call by name (and by id when the
caller kept one); OpenAI by id: calls get ids here, and each response takes the id of the first
call of the same name still unanswered. What has no OpenAI counterpart is listed in
docs/conversions.md.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from relay import tokens
from relay.errors import RelayError, bad_request
from relay.formats.common import data_url, tool_arguments

MAX_DEPTH = 32  # schema nesting followed when rewriting types
OPENAI_MAX_STOPS = 4
AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
SIZE_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
MEDIA_BYTES_PER_TOKEN = 64  # audio, video and documents: Gemini bills them by duration or page, roughly this dense


def unsupported(what: str) -> RelayError:
    return RelayError(501, "conversion_not_supported", f"{what} cannot be sent to this model's provider.")


def parts_of(content: object, where: str) -> list[Any]:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise bad_request(f"{where}.parts must be a list of parts.", param=where)
    return parts


def text_of(parts: list[Any]) -> str:
    return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))


def system_text(instruction: object) -> str:
    """systemInstruction is a Content; a bare string is taken too (the REST API accepts neither
    less nor more, but SDKs build it from one)."""
    if instruction is None:
        return ""
    if isinstance(instruction, str):
        return instruction
    return text_of(parts_of(instruction, "systemInstruction"))


# --- schemas ------------------------------------------------------------------------------
def json_schema(schema: Any, depth: int = 0) -> Any:
    """Gemini's OpenAPI-style Schema as JSON Schema: types lower-cased ("OBJECT" → "object"),
    `nullable` folded into the type, Gemini-only keys dropped, sizes given as strings made numbers."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("nullable", "propertyOrdering"):
            continue
        if key == "type" and isinstance(value, str):
            value = value.lower()
            if value == "type_unspecified":
                continue
        elif key == "properties" and isinstance(value, dict):
            value = {name: json_schema(sub, depth + 1) for name, sub in value.items()}
        elif key == "items":
            value = json_schema(value, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            value = [json_schema(sub, depth + 1) for sub in value]
        elif key in SIZE_KEYS and isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def declaration_parameters(declaration: dict[str, Any]) -> Any:
    if isinstance(declaration.get("parametersJsonSchema"), dict):
        return declaration["parametersJsonSchema"]  # already JSON Schema
    if isinstance(declaration.get("parameters"), dict):
        return json_schema(declaration["parameters"])
    return None


def convert_tools(tools: Any) -> list[dict[str, Any]]:
    """Function declarations only: Google's built-in tools (search, code execution, URL context,
    maps) run at Google and are dropped."""
    out = []
    for tool in tools or ():
        if not isinstance(tool, dict):
            raise bad_request("Each tool must be an object.", param="tools")
        for declaration in tool.get("functionDeclarations") or ():
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                raise bad_request("Each function declaration needs a name.", param="tools")
            fn: dict[str, Any] = {"name": declaration["name"]}
            if isinstance(declaration.get("description"), str) and declaration["description"]:
                fn["description"] = declaration["description"]
            parameters = declaration_parameters(declaration)
            if parameters:
                fn["parameters"] = parameters
            out.append({"type": "function", "function": fn})
    return out


def tool_choice(config: object) -> object:
    calling = (config or {}).get("functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        allowed = calling.get("allowedFunctionNames") or []
        if isinstance(allowed, list) and len(allowed) == 1 and isinstance(allowed[0], str):
            return {"type": "function", "function": {"name": allowed[0]}}
        return "required"
    return "auto"


# --- contents -----------------------------------------------------------------------------
def media_part(mime: str, data: str) -> dict[str, Any]:
    """An inlineData part in the OpenAI part type that holds it."""
    mime = (mime or "application/octet-stream").lower()
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": data_url(mime, data)}}
    if mime in AUDIO_FORMATS:
        return {"type": "input_audio", "input_audio": {"data": data, "format": AUDIO_FORMATS[mime]}}
    if mime.startswith("text/"):
        try:
            return {"type": "text", "text": base64.b64decode(data, validate=True).decode("utf-8")}
        except (binascii.Error, ValueError):
            raise bad_request("inlineData.data is not valid base64 text.", param="contents") from None
    extension = mime.rsplit("/", 1)[-1]
    return {"type": "file", "file": {"filename": f"file.{extension}", "file_data": data_url(mime, data)}}


def user_part(part: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]} if part["text"] and not part.get("thought") else None
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        return media_part(str(inline.get("mimeType") or ""), str(inline.get("data") or ""))
    file = part.get("fileData")
    if isinstance(file, dict):
        uri, mime = str(file.get("fileUri") or ""), str(file.get("mimeType") or "")
        if uri.startswith(("http://", "https://")) and (mime.startswith("image/") or not mime) and "generativelanguage.googleapis.com" not in uri:
            return {"type": "image_url", "image_url": {"url": uri}}
        raise unsupported("A fileData part (a file stored at Google, or a URL that is not an image)")
    return None  # executableCode, codeExecutionResult, videoMetadata …: Gemini's own


def response_text(response: object) -> str:
    """A functionResponse's `response` as the tool message's text: the output itself when the
    object only wraps one ({"output": …}, {"content": …}, {"result": …}), else the JSON."""
    if isinstance(response, dict) and len(response) == 1:
        (key, value), = response.items()
        if key in ("output", "content", "result") and isinstance(value, str):
            return value
    return orjson.dumps(response if response is not None else {}).decode()


class Calls:
    """Ids for the tool calls of the conversation, and which are still waiting for a result."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, str]] = []  # (id, function name)
        self.count = 0

    def issue(self, call: dict[str, Any]) -> str:
        self.count += 1
        given = call.get("id")
        call_id = given if isinstance(given, str) and given else f"call_{self.count}"
        self.waiting.append((call_id, str(call.get("name") or "")))
        return call_id

    def answer(self, response: dict[str, Any]) -> str:
        wanted, name = response.get("id"), str(response.get("name") or "")
        for n, (call_id, _called) in enumerate(self.waiting):
            if call_id == wanted:
                return self.waiting.pop(n)[0]
        for n, (_call_id, called) in enumerate(self.waiting):
            if called == name:
                return self.waiting.pop(n)[0]
        return wanted if isinstance(wanted, str) and wanted else f"call_{name or 'unknown'}"


def model_message(parts: list[Any], calls: Calls) -> dict[str, Any] | None:
    text = text_of(parts)
    tool_calls = []
    for part in parts:
        call = part.get("functionCall") if isinstance(part, dict) else None
        if isinstance(call, dict):
            tool_calls.append({"id": calls.issue(call), "type": "function",
                               "function": {"name": str(call.get("name") or ""), "arguments": tool_arguments(call.get("args") or {})}})
    if not text and not tool_calls:
        return None  # thoughts (or Gemini-only parts) alone: nothing another model can take back
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def user_messages(parts: list[Any], calls: Calls) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict):
            raise bad_request("Each part must be an object.", param="contents")
        response = part.get("functionResponse")
        if isinstance(response, dict):
            out.append({"role": "tool", "tool_call_id": calls.answer(response), "content": response_text(response.get("response"))})
            continue
        converted = user_part(part)
        if converted is not None:
            rest.append(converted)
    if rest:
        only_text = all(p["type"] == "text" for p in rest)
        out.append({"role": "user", "content": "".join(p["text"] for p in rest) if only_text and len(rest) == 1 else rest})
    return out


def convert_contents(contents: list[Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    calls = Calls()
    for n, content in enumerate(contents):
        if not isinstance(content, dict):
            raise bad_request(f"contents[{n}] must be an object.", param="contents")
        role = content.get("role") or "user"
        parts = parts_of(content, f"contents[{n}]")
        if role == "model":
            message = model_message(parts, calls)
            if message is not None:
                messages.append(message)
        elif role in ("user", "function"):
            messages.extend(user_messages(parts, calls))
        else:
            raise bad_request(f"Please use a valid role: user, model. (contents[{n}].role is '{role}')", param="contents")
    return messages


# --- the request --------------------------------------------------------------------------
def response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    if str(config.get("responseMimeType") or "") != "application/json":
        return None
    schema = config.get("responseJsonSchema")
    if not isinstance(schema, dict):
        schema = json_schema(config["responseSchema"]) if isinstance(config.get("responseSchema"), dict) else None
    if schema:
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    return {"type": "json_object"}


def apply_generation_config(body: dict[str, Any], config: object, max_tokens_field: str) -> None:
    if not isinstance(config, dict):
        return
    for source, target in (("temperature", "temperature"), ("topP", "top_p"), ("seed", "seed"),
                           ("presencePenalty", "presence_penalty"), ("frequencyPenalty", "frequency_penalty")):
        value = config.get(source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            body[target] = value
    if isinstance(config.get("maxOutputTokens"), int) and config["maxOutputTokens"] > 0:
        body[max_tokens_field] = config["maxOutputTokens"]
    if isinstance(config.get("candidateCount"), int) and config["candidateCount"] > 1:
        body["n"] = config["candidateCount"]
    stops = [s for s in config.get("stopSequences") or () if isinstance(s, str) and s]
    if stops:
        body["stop"] = stops[:OPENAI_MAX_STOPS]
    converted = response_format(config)
    if converted is not None:
        body["response_format"] = converted


def gemini_to_chat(payload: dict[str, Any], model: str, stream: bool, max_tokens_field: str = "max_tokens") -> dict[str, Any]:
    """The OpenAI chat payload for a generateContent payload. `cachedContent` names content stored
    at Google and cannot be served elsewhere (501)."""
    if payload.get("cachedContent"):
        raise unsupported("cachedContent (content cached at Google)")
    messages = []
    system = system_text(payload.get("systemInstruction"))
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(convert_contents(payload.get("contents") or []))
    if not any(m["role"] != "system" for m in messages):
        raise bad_request("The conversation has no content to send.", param="contents")
    body: dict[str, Any] = {"model": model, "messages": messages}
    tools = convert_tools(payload.get("tools"))
    if tools:
        body["tools"] = tools
        choice = tool_choice(payload.get("toolConfig"))
        if choice is not None:
            body["tool_choice"] = choice
    apply_generation_config(body, payload.get("generationConfig"), max_tokens_field)
    if stream:
        body["stream"] = True
    return body


def wants_thoughts(payload: dict[str, Any]) -> bool:
    """Gemini returns thought summaries only when asked (thinkingConfig.includeThoughts)."""
    config = payload.get("generationConfig")
    thinking = config.get("thinkingConfig") if isinstance(config, dict) else None
    return isinstance(thinking, dict) and thinking.get("includeThoughts") is True


# --- the hold's estimate ------------------------------------------------------------------
def _part_tokens(part: object) -> int:
    if not isinstance(part, dict):
        return 0
    if isinstance(part.get("text"), str):
        return tokens.text_tokens(part["text"])
    for key in ("functionCall", "functionResponse", "executableCode", "codeExecutionResult"):
        if key in part:
            return tokens.text_tokens(orjson.dumps(part[key]).decode())
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        mime = str(inline.get("mimeType") or "")
        size = len(str(inline.get("data") or "")) * 3 // 4
        return tokens.IMAGE_TOKENS if mime.startswith("image/") else max(tokens.IMAGE_TOKENS, size // MEDIA_BYTES_PER_TOKEN)
    return tokens.IMAGE_TOKENS if "fileData" in part else 0


def prompt_tokens(payload: dict[str, Any]) -> int:
    """Estimated prompt tokens of a generateContent payload, read as it is (native channels get it
    unconverted, so the estimate must not depend on a conversion)."""
    total = tokens.PER_REQUEST_OVERHEAD
    instruction = payload.get("systemInstruction")
    if isinstance(instruction, str):
        total += tokens.text_tokens(instruction)
    elif isinstance(instruction, dict) and isinstance(instruction.get("parts"), list):
        total += sum(_part_tokens(p) for p in instruction["parts"])
    for content in payload.get("contents") or ():
        parts = content.get("parts") if isinstance(content, dict) else None
        if isinstance(parts, list):
            total += tokens.PER_MESSAGE_OVERHEAD + sum(_part_tokens(p) for p in parts)
    if payload.get("tools"):
        total += tokens.text_tokens(orjson.dumps(payload["tools"]).decode())
    return total
