"""What the GenAI semantic conventions ask of an inference or embeddings span beyond what pricing needs: the
request parameters, the finish reasons, the server, the output type, and (only when the user opts in) the
messages. Names come from the installed `opentelemetry-semantic-conventions`.

The provider adapters read their own request bodies and responses with the small functions here; `core` calls
them once per call, on the body it already holds and the response it already read, and gives the same
attributes to the span and to the metrics (`metrics.py`).

Settings (read when a provider is instrumented):

- `OTEL_SEMCONV_STABILITY_OPT_IN` (comma-separated): with `gen_ai_latest_experimental`, the variable
  below takes the conventions' enum (`NO_CONTENT`, `SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT`) and messages
  can also go out as the `gen_ai.client.inference.operation.details` event; without it (the default) the variable
  is a boolean (`true`: the messages on the span). The span's attribute names are the same either way: ours
  already are the latest the installed conventions define (`gen_ai.provider.name`, not `gen_ai.system`).
- `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: messages are never captured unless it says so.
- `OTEL_LLMCOST_CONTENT_MAX_LENGTH`: characters of text kept per content attribute (default 16384); longer text
  is cut and marked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv.attributes import server_attributes as _server

MAX_TOKENS = _gen_ai.GEN_AI_REQUEST_MAX_TOKENS
TEMPERATURE = _gen_ai.GEN_AI_REQUEST_TEMPERATURE
TOP_P = _gen_ai.GEN_AI_REQUEST_TOP_P
TOP_K = _gen_ai.GEN_AI_REQUEST_TOP_K
FREQUENCY_PENALTY = _gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY
PRESENCE_PENALTY = _gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY
STOP_SEQUENCES = _gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES
SEED = _gen_ai.GEN_AI_REQUEST_SEED
CHOICE_COUNT = _gen_ai.GEN_AI_REQUEST_CHOICE_COUNT
ENCODING_FORMATS = _gen_ai.GEN_AI_REQUEST_ENCODING_FORMATS
DIMENSION_COUNT = _gen_ai.GEN_AI_EMBEDDINGS_DIMENSION_COUNT
FINISH_REASONS = _gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
OUTPUT_TYPE = _gen_ai.GEN_AI_OUTPUT_TYPE
CONVERSATION_ID = _gen_ai.GEN_AI_CONVERSATION_ID
INPUT_MESSAGES = _gen_ai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES = _gen_ai.GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS = _gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS
TOOL_NAME = _gen_ai.GEN_AI_TOOL_NAME
TOOL_TYPE = _gen_ai.GEN_AI_TOOL_TYPE
TOOL_DESCRIPTION = _gen_ai.GEN_AI_TOOL_DESCRIPTION
TOOL_CALL_ARGUMENTS = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
TOOL_CALL_RESULT = _gen_ai.GEN_AI_TOOL_CALL_RESULT
EXECUTE_TOOL = _gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
SERVER_ADDRESS = _server.SERVER_ADDRESS
SERVER_PORT = _server.SERVER_PORT

OUTPUT_JSON = _gen_ai.GenAiOutputTypeValues.JSON.value
OUTPUT_TEXT = _gen_ai.GenAiOutputTypeValues.TEXT.value

# The event that carries the messages when they are captured as events (latest experimental conventions).
OPERATION_DETAILS_EVENT = "gen_ai.client.inference.operation.details"

LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"


@dataclass(frozen=True)
class Settings:
    """How much telemetry an instrumentor emits beyond the span's usage and identity."""

    latest: bool = False  # OTEL_SEMCONV_STABILITY_OPT_IN names gen_ai_latest_experimental
    content_on_span: bool = False
    content_as_event: bool = False
    content_max_length: int = 16384
    metrics: bool = True

    @property
    def content(self) -> bool:
        return self.content_on_span or self.content_as_event


def settings_from_env(metrics: bool | None = None) -> Settings:
    opt_in = {part.strip().lower() for part in os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    latest = LATEST_EXPERIMENTAL in opt_in
    mode = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower()
    on_span = mode in ("true", "1", "yes", "on")
    on_event = False
    if latest:  # the conventions' enum, only under the opt-in (as the contrib's GenAI utilities read it)
        on_span = on_span or mode in ("span_only", "span_and_event")
        on_event = mode in ("event_only", "span_and_event")
    try:
        max_length = max(int(os.environ.get("OTEL_LLMCOST_CONTENT_MAX_LENGTH", "16384")), 0)
    except ValueError:
        max_length = 16384
    if metrics is None:
        value = os.environ.get("OTEL_LLMCOST_METRICS", "").strip().lower()
        metrics = value not in ("false", "0", "no", "off")
    return Settings(latest, on_span, on_event, max_length, metrics)


# -- request parameters ------------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return type(value) in (int, float)


# OpenAI request keys -> the conventions' attribute, for the numeric parameters (`seed`, `n` and the token limits
# must be integers; the first token limit the body names wins, as the API reads them).
_OPENAI_NUMBERS = {"temperature": TEMPERATURE, "top_p": TOP_P, "frequency_penalty": FREQUENCY_PENALTY,
                   "presence_penalty": PRESENCE_PENALTY, "max_completion_tokens": MAX_TOKENS, "max_tokens": MAX_TOKENS,
                   "max_output_tokens": MAX_TOKENS, "seed": SEED, "n": CHOICE_COUNT, "dimensions": DIMENSION_COUNT}
_INTEGERS = frozenset((MAX_TOKENS, SEED, CHOICE_COUNT, DIMENSION_COUNT))
_OPENAI_OTHERS = frozenset(("stop", "response_format", "text", "encoding_format", "conversation"))
_JSON_FORMATS = ("json_object", "json_schema")


def _stop(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _output_type_of_format(kind: Any) -> str | None:
    if kind in _JSON_FORMATS:
        return OUTPUT_JSON
    if kind == "text":
        return OUTPUT_TEXT
    return None


def openai_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Chat completions, legacy completions, Responses API and embeddings request bodies. One pass over the
    body's keys (a handful): read on every call."""
    attributes: dict[str, Any] = {}
    numbers = _OPENAI_NUMBERS
    for key, value in body.items():
        name = numbers.get(key)
        if name is not None:
            kind = type(value)
            if kind is int or (kind is float and name not in _INTEGERS):
                if name is CHOICE_COUNT and value == 1:
                    continue
                if name not in attributes:
                    attributes[name] = value
        elif key in _OPENAI_OTHERS and value is not None:
            _openai_other(key, value, attributes)
    return attributes


def _openai_other(key: str, value: Any, attributes: dict[str, Any]) -> None:
    if key == "stop":
        stop = _stop(value)
        if stop:
            attributes[STOP_SEQUENCES] = stop
    elif key == "encoding_format":  # embeddings
        if isinstance(value, str):
            attributes[ENCODING_FORMATS] = [value]
    elif key == "conversation":  # Responses API: an id, or {"id": ...}
        if type(value) is dict:
            value = value.get("id")
        if isinstance(value, str) and value:
            attributes[CONVERSATION_ID] = value
    else:  # chat completions' `response_format`, the Responses API's `text: {"format": {...}}`
        if key == "text":
            value = value.get("format") if type(value) is dict else None
        if type(value) is dict:
            output_type = _output_type_of_format(value.get("type"))
            if output_type:
                attributes[OUTPUT_TYPE] = output_type


def anthropic_request(body: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    get = body.get
    value = get("max_tokens")
    if type(value) is int:
        attributes[MAX_TOKENS] = value
    for key, name in (("temperature", TEMPERATURE), ("top_p", TOP_P), ("top_k", TOP_K)):
        value = get(key)
        if value is not None and _number(value):
            attributes[name] = value
    value = get("stop_sequences")
    if value is not None:
        stop = _stop(value)
        if stop:
            attributes[STOP_SEQUENCES] = stop
    value = get("output_format")  # structured outputs: {"type": "json_schema", ...}
    if value is None:
        value = (get("output_config") or {}).get("format") if type(get("output_config")) is dict else None
    if type(value) is dict:
        output_type = _output_type_of_format(value.get("type"))
        if output_type:
            attributes[OUTPUT_TYPE] = output_type
    return attributes


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


_GOOGLE_NUMBERS = (("temperature", TEMPERATURE), ("top_p", TOP_P), ("top_k", TOP_K),
                   ("frequency_penalty", FREQUENCY_PENALTY), ("presence_penalty", PRESENCE_PENALTY))


def google_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`generate_content(model=..., contents=..., config=...)`: the parameters are in `config`."""
    config = kwargs.get("config")
    if config is None:
        return {}
    attributes: dict[str, Any] = {}
    for key, name in _GOOGLE_NUMBERS:
        value = _get(config, key)
        if value is not None and _number(value):
            attributes[name] = value
    value = _get(config, "max_output_tokens")
    if type(value) is int:
        attributes[MAX_TOKENS] = value
    stop = _stop(_get(config, "stop_sequences"))
    if stop:
        attributes[STOP_SEQUENCES] = stop
    value = _get(config, "seed")
    if type(value) is int:
        attributes[SEED] = value
    value = _get(config, "candidate_count")
    if type(value) is int and value != 1:
        attributes[CHOICE_COUNT] = value
    value = _get(config, "response_mime_type")
    if value == "application/json":
        attributes[OUTPUT_TYPE] = OUTPUT_JSON
    elif value == "text/plain":
        attributes[OUTPUT_TYPE] = OUTPUT_TEXT
    return attributes


# -- the server ------------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"https": 443, "http": 80}
# id(base URL object) -> (the object, its attributes): a client keeps its base URL until it is given another; the
# object is kept alive here so that its id is not reused.
_servers: dict[int, tuple[Any, dict[str, Any]]] = {}


def server_of_url(url: Any) -> dict[str, Any]:
    """`server.address` and `server.port` of a base URL (an `httpx`/`httpx2` URL or a string). The port is
    always set with the address (the conventions require it then): the URL's own, else the scheme's default."""
    known = _servers.get(id(url))
    if known is not None and known[0] is url:
        return known[1]
    attributes: dict[str, Any] = {}
    if isinstance(url, str):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host, port, scheme = parts.hostname, parts.port, parts.scheme
    else:
        host, port, scheme = getattr(url, "host", None), getattr(url, "port", None), getattr(url, "scheme", None)
    if host:
        attributes[SERVER_ADDRESS] = host
        port = port or _DEFAULT_PORTS.get(scheme or "https")
        if port:
            attributes[SERVER_PORT] = port
    if len(_servers) >= 256:
        _servers.clear()
    _servers[id(url)] = (url, attributes)
    return attributes


def stainless_server(client: Any) -> dict[str, Any]:
    """The server of an `openai` or `anthropic` client (its `_base_url`, what the SDK sends to)."""
    url = getattr(client, "_base_url", None)
    if url is None:
        url = getattr(client, "base_url", None)
    return server_of_url(url) if url is not None else {}


def google_server(models: Any) -> dict[str, Any]:
    options = getattr(getattr(models, "_api_client", None), "_http_options", None)
    url = _get(options, "base_url")
    return server_of_url(url) if isinstance(url, str) else {}


# -- finish reasons --------------------------------------------------------------------------------------

def openai_finish_reasons(response: Any) -> list[str] | None:
    """Chat and legacy completions: one per choice. Responses API: from the response's status."""
    choices = _get(response, "choices")
    if choices:
        reasons = [r for r in (_get(choice, "finish_reason") for choice in choices) if isinstance(r, str)]
        return reasons or None
    status = _get(response, "status")
    if status == "completed":
        return ["stop"]
    if status == "incomplete":
        reason = _get(_get(response, "incomplete_details"), "reason")
        return [reason if isinstance(reason, str) else "incomplete"]
    if status == "failed":
        return ["error"]
    return None


def anthropic_finish_reasons(message: Any) -> list[str] | None:
    reason = _get(message, "stop_reason")
    return [reason] if isinstance(reason, str) else None


def _enum_text(value: Any) -> str | None:
    """A google-genai enum (`FinishReason.STOP`) or its text, as the lower-case text (`stop`)."""
    value = getattr(value, "value", value)
    return value.lower() if isinstance(value, str) else None


def google_finish_reasons(response: Any) -> list[str] | None:
    reasons = [r for r in (_enum_text(_get(c, "finish_reason")) for c in _get(response, "candidates") or ()) if r]
    return reasons or None


def with_finish_reasons(read: Callable[[Any], dict[str, Any]],
                        finish_reasons: Callable[[Any], list[str] | None]) -> Callable[[Any], dict[str, Any]]:
    """A response reader that also says why the model stopped (same response object, read once more for it)."""

    def read_with_reasons(response: Any) -> dict[str, Any]:
        attributes = read(response)
        try:
            reasons = finish_reasons(response)
        except Exception:
            reasons = None
        if reasons:
            attributes[FINISH_REASONS] = reasons
        return attributes

    read_with_reasons.__wrapped__ = read  # type: ignore[attr-defined]
    return read_with_reasons


# -- message content (opt-in) ----------------------------------------------------------------------------
#
# The conventions' JSON shapes: input and output messages are `{"role", "parts": [...]}` (output messages also
# `finish_reason`), system instructions a list of parts; a part is `{"type": "text", "content"}`,
# `{"type": "tool_call", "id", "name", "arguments"}`, `{"type": "tool_call_response", "id", "response"}`,
# `{"type": "reasoning", "content"}`, or `{"type": <its own type>}` for media, whose bytes are never copied.

def _text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def _openai_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)]
    parts = []
    for part in content or ():
        kind = _get(part, "type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(_text(_get(part, "text") or ""))
        elif kind == "refusal":
            parts.append(_text(_get(part, "refusal") or ""))
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def _openai_tool_calls(tool_calls: Any) -> list[dict[str, Any]]:
    parts = []
    for call in tool_calls or ():
        function = _get(call, "function")
        parts.append({"type": "tool_call", "id": _get(call, "id"), "name": _get(function, "name"),
                      "arguments": _get(function, "arguments")})
    return parts


def openai_input(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(input messages, system instructions) of a chat, completion or Responses API request."""
    messages: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    instructions = body.get("instructions")  # Responses API: given apart from the conversation
    if isinstance(instructions, str):
        system.append(_text(instructions))
    items = body.get("messages")
    if items is None:
        items = body.get("input")
    if items is None:
        items = body.get("prompt")  # legacy completions
    if isinstance(items, str):
        return [{"role": "user", "parts": [_text(items)]}], system
    for item in items or ():
        if type(item) is not dict:
            continue
        role = item.get("role")
        kind = item.get("type")
        if kind == "function_call":  # Responses API items
            messages.append({"role": "assistant", "parts": [{"type": "tool_call", "id": item.get("call_id"),
                                                             "name": item.get("name"),
                                                             "arguments": item.get("arguments")}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": item.get("call_id"),
                                                        "response": item.get("output")}]})
        elif role == "tool":
            messages.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": item.get("tool_call_id"),
                                                        "response": item.get("content")}]})
        elif isinstance(role, str):
            parts = _openai_parts(item.get("content")) + _openai_tool_calls(item.get("tool_calls"))
            messages.append({"role": role, "parts": parts})
    return messages, system


def openai_output(response: Any) -> list[dict[str, Any]]:
    choices = _get(response, "choices")
    if choices:
        out = []
        for choice in choices:
            message = _get(choice, "message")
            if message is not None:
                parts = _openai_parts(_get(message, "content")) + _openai_tool_calls(_get(message, "tool_calls"))
            else:  # legacy completions
                parts = [_text(_get(choice, "text") or "")]
            out.append({"role": "assistant", "parts": parts, "finish_reason": _get(choice, "finish_reason") or ""})
        return out
    output = _get(response, "output")
    if not output:
        return []
    parts = []
    for item in output:  # Responses API
        kind = _get(item, "type")
        if kind == "message":
            parts += _openai_parts(_get(item, "content"))
        elif kind == "function_call":
            parts.append({"type": "tool_call", "id": _get(item, "call_id"), "name": _get(item, "name"),
                          "arguments": _get(item, "arguments")})
        elif isinstance(kind, str) and kind != "reasoning":
            parts.append({"type": kind})
    reasons = openai_finish_reasons(response) or [""]
    return [{"role": "assistant", "parts": parts, "finish_reason": reasons[0]}]


def _anthropic_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)]
    parts = []
    for block in content or ():
        kind = _get(block, "type")
        if kind == "text":
            parts.append(_text(_get(block, "text") or ""))
        elif kind in ("tool_use", "server_tool_use"):
            parts.append({"type": "tool_call", "id": _get(block, "id"), "name": _get(block, "name"),
                          "arguments": _get(block, "input")})
        elif kind == "tool_result":
            result = _get(block, "content")
            if not isinstance(result, str):
                result = [p.get("content") for p in _anthropic_parts(result) if "content" in p]
            parts.append({"type": "tool_call_response", "id": _get(block, "tool_use_id"), "response": result})
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": _get(block, "thinking") or ""})
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def anthropic_input(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    messages = [{"role": m.get("role"), "parts": _anthropic_parts(m.get("content"))}
                for m in body.get("messages") or () if type(m) is dict]
    system = body.get("system")
    return messages, _anthropic_parts(system) if system else []


def anthropic_output(message: Any) -> list[dict[str, Any]]:
    content = _get(message, "content")
    if content is None:
        return []
    return [{"role": "assistant", "parts": _anthropic_parts(content),
             "finish_reason": _get(message, "stop_reason") or ""}]


def _google_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)]
    parts = []
    for part in _get(content, "parts") or ([content] if content is not None else []):
        if isinstance(part, str):
            parts.append(_text(part))
            continue
        text = _get(part, "text")
        call = _get(part, "function_call")
        answer = _get(part, "function_response")
        if isinstance(text, str):
            parts.append({"type": "reasoning", "content": text} if _get(part, "thought") else _text(text))
        elif call is not None:
            parts.append({"type": "tool_call", "id": _get(call, "id"), "name": _get(call, "name"),
                          "arguments": _get(call, "args")})
        elif answer is not None:
            parts.append({"type": "tool_call_response", "id": _get(answer, "id"), "response": _get(answer, "response")})
        else:
            parts.append({"type": "blob" if _get(part, "inline_data") is not None else "uri"
                          if _get(part, "file_data") is not None else "unknown"})
    return parts


def _google_role(role: Any) -> str:
    return "assistant" if role == "model" else role if isinstance(role, str) else "user"


def google_input(kwargs: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    contents = kwargs.get("contents")
    if contents is None:
        items: list[Any] = []
    elif isinstance(contents, (list, tuple)):
        items = list(contents)
    else:
        items = [contents]
    messages = []
    loose: list[Any] = []  # plain strings and parts: one user message together
    for item in items:
        if _get(item, "parts") is not None:
            messages.append({"role": _google_role(_get(item, "role")), "parts": _google_parts(item)})
        else:
            loose += _google_parts(item)
    if loose:
        messages.insert(0, {"role": "user", "parts": loose})
    system = _get(kwargs.get("config"), "system_instruction")
    return messages, _google_parts(system) if system else []


def google_output(response: Any) -> list[dict[str, Any]]:
    return [{"role": "assistant", "parts": _google_parts(_get(candidate, "content")),
             "finish_reason": _enum_text(_get(candidate, "finish_reason")) or ""}
            for candidate in _get(response, "candidates") or ()]


TRUNCATED = "…[truncated]"
_CONTENT_KEYS = frozenset(("content", "arguments", "response"))  # what the text is in; roles, types, ids are kept


def bounded(value: Any, max_length: int) -> Any:
    """`value` with the text of its parts (`content`, `arguments`, `response`) cut to `max_length` characters in
    all, each string cut marked `TRUNCATED`; the JSON stays valid."""
    budget = [max_length]

    def cut(item: Any, is_content: bool) -> Any:
        if isinstance(item, str):
            if not is_content or len(item) <= budget[0]:
                if is_content:
                    budget[0] -= len(item)
                return item
            kept = item[:budget[0]]
            budget[0] = 0
            return kept + TRUNCATED
        if isinstance(item, dict):
            return {key: cut(v, is_content or key in _CONTENT_KEYS) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [cut(v, is_content) for v in item]
        return item

    return cut(value, False)


def as_json(value: Any, max_length: int) -> str:
    return json.dumps(bounded(value, max_length), ensure_ascii=False, default=str, separators=(",", ":"))


# -- requirement levels ----------------------------------------------------------------------------------
#
# The levels the GenAI conventions' pages give the attributes of an inference span, an embeddings span and the
# client metrics (the conventions' Python package carries the names, not the levels). A conditionally required
# attribute is required when its condition holds: an error (`error.type`), a request that says it (`seed`,
# `choice.count` other than 1, an output format), a known model, a server address (`server.port`).
REQUIRED, CONDITIONALLY_REQUIRED, RECOMMENDED, OPT_IN = "required", "conditionally_required", "recommended", "opt_in"

_REQUEST_IDENTITY = {
    _gen_ai.GEN_AI_OPERATION_NAME: REQUIRED,
    _gen_ai.GEN_AI_PROVIDER_NAME: REQUIRED,
    _gen_ai.GEN_AI_REQUEST_MODEL: CONDITIONALLY_REQUIRED,
    _error.ERROR_TYPE: CONDITIONALLY_REQUIRED,
    SERVER_PORT: CONDITIONALLY_REQUIRED,
    SERVER_ADDRESS: RECOMMENDED,
}
INFERENCE_SPAN = {
    **_REQUEST_IDENTITY,
    CONVERSATION_ID: CONDITIONALLY_REQUIRED,
    OUTPUT_TYPE: CONDITIONALLY_REQUIRED,
    CHOICE_COUNT: CONDITIONALLY_REQUIRED,
    SEED: CONDITIONALLY_REQUIRED,
    FREQUENCY_PENALTY: RECOMMENDED,
    MAX_TOKENS: RECOMMENDED,
    PRESENCE_PENALTY: RECOMMENDED,
    STOP_SEQUENCES: RECOMMENDED,
    TEMPERATURE: RECOMMENDED,
    TOP_K: RECOMMENDED,
    TOP_P: RECOMMENDED,
    FINISH_REASONS: RECOMMENDED,
    _gen_ai.GEN_AI_RESPONSE_ID: RECOMMENDED,
    _gen_ai.GEN_AI_RESPONSE_MODEL: RECOMMENDED,
    _gen_ai.GEN_AI_USAGE_INPUT_TOKENS: RECOMMENDED,
    _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: RECOMMENDED,
    INPUT_MESSAGES: OPT_IN,
    OUTPUT_MESSAGES: OPT_IN,
    SYSTEM_INSTRUCTIONS: OPT_IN,
}
EMBEDDINGS_SPAN = {
    **_REQUEST_IDENTITY,
    DIMENSION_COUNT: RECOMMENDED,
    ENCODING_FORMATS: RECOMMENDED,
    _gen_ai.GEN_AI_USAGE_INPUT_TOKENS: RECOMMENDED,
}
TOOL_SPAN = {
    _gen_ai.GEN_AI_OPERATION_NAME: REQUIRED,
    _error.ERROR_TYPE: CONDITIONALLY_REQUIRED,
    TOOL_NAME: RECOMMENDED,
    TOOL_TYPE: RECOMMENDED,
    TOOL_DESCRIPTION: RECOMMENDED,
    TOOL_CALL_ARGUMENTS: OPT_IN,
    TOOL_CALL_RESULT: OPT_IN,
}
# The client metrics' attributes (`gen_ai.client.token.usage` also requires `gen_ai.token.type` and never carries
# `error.type`).
METRIC_ATTRIBUTES = {**_REQUEST_IDENTITY, _gen_ai.GEN_AI_RESPONSE_MODEL: RECOMMENDED}
