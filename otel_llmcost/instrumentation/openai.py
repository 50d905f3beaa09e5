"""OpenAI (and OpenAI-compatible servers, and Azure OpenAI): endpoints and response readers.

OpenAI's `prompt_tokens` already includes `cached_tokens` (and `cache_write_tokens` where reported),
which is what `gen_ai.usage.input_tokens` asks for: it is copied as is, never added to.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Collection, Iterator, Mapping

from .. import hosts, names
from . import semconv
from .core import Described, Endpoint, Once, Provider, StreamReader, field, non_negative_int, stainless_describe
from .instrumentor import SdkInstrumentor

# Hosts of OpenAI-compatible services, so their calls are priced with their own prices.
KNOWN_HOSTS = {
    "api.openai.com": "openai",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.together.xyz": "together",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.fireworks.ai": "fireworks",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
    "generativelanguage.googleapis.com": "gcp.gemini",
}


@lru_cache(maxsize=256)
def _provider_for_host(host: str, is_azure: bool, port: int | None = None) -> str:
    """Read once per host: the user's mapping, then Azure, then the user's name for any OpenAI-compatible
    server (`OTEL_LLMCOST_OPENAI_PROVIDER`), then the known hosts, then a self-hosting server's name (loopback,
    private networks, Ollama, vLLM, ...: see `otel_llmcost.hosts`) unless the mapping says the host is `hosted`;
    other hosts are `openai`."""
    host = host.lower()
    named = hosts.named_provider(host)
    if named and named != hosts.HOSTED:
        return named
    if is_azure or host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    configured = os.environ.get("OTEL_LLMCOST_OPENAI_PROVIDER")
    if configured:
        return configured
    known = hosts.match_host(host, KNOWN_HOSTS)
    if known:
        return known
    if named is None:
        local = hosts.self_hosted_provider(host, port)
        if local:
            return local
    return "openai"


# id(base_url) -> (base_url, type of the client, provider): reading the host of a URL costs more than the rest of
# `provider_name`, and a client keeps its base URL object until it is given another one. The URL is kept alive
# here, so its id is not reused.
_provider_names: dict[int, tuple[Any, type, str]] = {}
# Client class -> whether its `base_url` is the SDK's own getter, which returns `_base_url` as is: then that is
# read directly (openai 3.x's getter imports a module on every read). Any other class (`openai`'s
# module-level client, an app's subclass) is read through its property.
_plain_base_url: dict[type, bool] = {}


def _sdk_base_url_getter(kind: type) -> bool:
    import openai
    from openai._base_client import BaseClient

    return getattr(kind, "base_url", None) in (openai.OpenAI.base_url, openai.AsyncOpenAI.base_url, BaseClient.base_url)


def provider_name(client: Any) -> str:
    kind = type(client)
    plain = _plain_base_url.get(kind)
    if plain is None:
        plain = _plain_base_url[kind] = _sdk_base_url_getter(kind)
    base_url = getattr(client, "_base_url", None) if plain else None
    if base_url is None:  # (an SDK version without `_base_url`: the public getter)
        base_url = client.base_url
    known = _provider_names.get(id(base_url))
    if known is not None and known[0] is base_url and known[1] is kind:
        return known[2]
    name = _provider_for_host(base_url.host, "Azure" in kind.__name__, base_url.port)
    if len(_provider_names) >= 256:
        _provider_names.clear()
    _provider_names[id(base_url)] = (base_url, kind, name)
    return name


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    attributes = semconv.openai_request(body)
    tier = body.get("service_tier")
    if isinstance(tier, str):
        attributes[names.OPENAI_REQUEST_SERVICE_TIER] = tier
    return attributes


def _usage_attributes(usage: Any) -> dict[str, Any]:
    """Chat and legacy completions usage (`prompt_tokens`, `completion_tokens` and their details).
    Read on every call, so `field` and `non_negative_int` are written out (see `field`)."""
    attributes: dict[str, Any] = {}
    if usage is None:
        return attributes
    get = dict.get if type(usage) is dict else getattr
    prompt = get(usage, "prompt_tokens", None)
    if type(prompt) is not int or prompt < 0:  # the Responses API spells it `input_tokens`
        return _responses_usage_attributes(usage)
    attributes[names.INPUT_TOKENS] = prompt
    completion = get(usage, "completion_tokens", None)
    if type(completion) is int and completion >= 0:
        attributes[names.OUTPUT_TOKENS] = completion
    details = get(usage, "prompt_tokens_details", None)
    if details is not None:
        get_detail = dict.get if type(details) is dict else getattr
        cached = get_detail(details, "cached_tokens", None)
        if type(cached) is int and cached > 0:
            attributes[names.CACHE_READ_TOKENS] = cached
        written = get_detail(details, "cache_write_tokens", None)
        if type(written) is int and written > 0:
            attributes[names.CACHE_WRITE_TOKENS] = written
        audio = get_detail(details, "audio_tokens", None)  # within prompt_tokens (gpt-audio, gpt-4o-audio-preview)
        if type(audio) is int and audio > 0:
            attributes[names.INPUT_AUDIO_TOKENS] = audio
    details = get(usage, "completion_tokens_details", None)
    if details is not None:
        get_detail = dict.get if type(details) is dict else getattr
        reasoning = get_detail(details, "reasoning_tokens", None)
        if type(reasoning) is int and reasoning > 0:
            attributes[names.REASONING_TOKENS] = reasoning
        audio = get_detail(details, "audio_tokens", None)  # within completion_tokens
        if type(audio) is int and audio > 0:
            attributes[names.OUTPUT_AUDIO_TOKENS] = audio
    return attributes


def _responses_usage_attributes(usage: Any) -> dict[str, Any]:
    """Responses API usage: `input_tokens` (cache included), `output_tokens` (reasoning included)."""
    attributes: dict[str, Any] = {}
    value = non_negative_int(field(usage, "input_tokens"))
    if value is not None:
        attributes[names.INPUT_TOKENS] = value
    value = non_negative_int(field(usage, "output_tokens"))
    if value is not None:
        attributes[names.OUTPUT_TOKENS] = value
    input_details = field(usage, "input_tokens_details")
    cached = non_negative_int(field(input_details, "cached_tokens"))
    if cached:
        attributes[names.CACHE_READ_TOKENS] = cached
    written = non_negative_int(field(input_details, "cache_write_tokens"))
    if written:
        attributes[names.CACHE_WRITE_TOKENS] = written
    reasoning = non_negative_int(field(field(usage, "output_tokens_details"), "reasoning_tokens"))
    if reasoning:
        attributes[names.REASONING_TOKENS] = reasoning
    return attributes


def read_response(response: Any) -> dict[str, Any]:
    """A chat completion, completion, embedding list or Responses API response."""
    get = dict.get if type(response) is dict else getattr  # `field`, written out (read on every call)
    attributes = _usage_attributes(get(response, "usage", None))
    model = get(response, "model", None)
    if isinstance(model, str):
        attributes[names.RESPONSE_MODEL] = model
    response_id = get(response, "id", None)
    if isinstance(response_id, str):
        attributes[names.RESPONSE_ID] = response_id
    tier = get(response, "service_tier", None)
    if isinstance(tier, str):
        attributes[names.SERVICE_TIER] = tier
    output = get(response, "output", None)  # Responses API: the output items, tool calls among them
    if output and isinstance(output, list):
        _count_tool_calls(output, attributes)
    return attributes


# Responses API output items billed per call (the catalog's web search and file search, `storage_searches`, prices).
_PRICED_TOOL_CALLS = {"web_search_call": names.WEB_SEARCH_REQUESTS, "file_search_call": names.FILE_SEARCH_REQUESTS}


def _count_tool_calls(output: list, attributes: dict[str, Any]) -> None:
    for item in output:
        name = _PRICED_TOOL_CALLS.get(field(item, "type"))
        if name is not None:
            attributes[name] = attributes.get(name, 0) + 1


def _text_length(content: Any) -> int:
    """Characters of a message's content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) for part in content if type(part) is dict and isinstance(part.get("text"), str))
    return 0


def _estimated_tokens(characters: int) -> int:
    """About four characters a token (English text, OpenAI's rule of thumb), rounded up."""
    return -(-characters // 4)


def estimated_input_tokens(body: Mapping[str, Any]) -> int:
    """The input of a chat, completion or Responses request, estimated from its text."""
    characters = _text_length(body.get("instructions"))
    for key in ("messages", "input", "prompt"):  # chat, Responses API, legacy completions
        value = body.get(key)
        if isinstance(value, str):
            characters += len(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    characters += len(item)
                elif type(item) is dict:
                    characters += _text_length(item.get("content"))
        if value is not None:
            break
    return _estimated_tokens(characters)


CUT_SHORT = "the stream ended before its usage report (closed early or cut short)"
NOT_ASKED = ("the request did not ask for the stream's usage (stream_options.include_usage; see "
             "OTEL_LLMCOST_OPENAI_INCLUDE_USAGE)")


def add_estimate(attributes: dict[str, Any], body: Mapping[str, Any], characters: int, why: str) -> None:
    """A stream without a usage report: its tokens estimated from the request's text and the `characters`
    streamed, flagged as such with the reason (the row is `estimated`, never a silent $0)."""
    attributes[names.USAGE_MISSING] = True
    attributes[names.INPUT_TOKENS] = estimated_input_tokens(body)
    attributes[names.OUTPUT_TOKENS] = _estimated_tokens(characters)
    attributes[names.USAGE_ESTIMATED] = True
    attributes[names.USAGE_NOTE] = f"{why}: tokens estimated from the text, about 4 characters a token"


def _asked_for_usage(body: Mapping[str, Any]) -> bool:
    stream_options = body.get("stream_options")
    return type(stream_options) is dict and stream_options.get("include_usage") is True


def _hide_usage(chunk: Any) -> None:
    """Makes a chunk what it would have been had the request not asked for usage: no `usage` field at all
    (the server sends `"usage": null` on every chunk once asked), so its `to_dict()` and `model_fields_set`
    are the same as without us."""
    if type(chunk) is dict:
        chunk.pop("usage", None)
        return
    values = getattr(chunk, "__dict__", None)
    if type(values) is dict and values.get("usage") is not None:
        values["usage"] = None
    fields_set = getattr(chunk, "__pydantic_fields_set__", None)
    if fields_set is None:
        fields_set = getattr(chunk, "__fields_set__", None)  # pydantic 1
    if type(fields_set) is set:
        fields_set.discard("usage")


class ChunkReader(StreamReader):
    """Chat and legacy completion streams: usage arrives in the last chunk, and only when asked for.

    When we asked for it (`Described.usage_asked`), the stream is made the one the app asked for: the extra
    usage chunk (empty `choices`) is swallowed and the `usage` field taken off the other chunks. When the
    stream ends without a usage report (closed early, cut short, or not asked for), the tokens are estimated
    from the text seen and the request's messages, and flagged (`llmcost.usage.estimated`)."""

    __slots__ = ("model", "response_id", "tier", "usage", "hide", "asked", "body", "characters")

    def __init__(self) -> None:
        self.model = self.response_id = self.tier = self.usage = self.body = None
        self.hide = self.asked = False
        self.characters = 0

    def begin(self, described: Described, record_result: Any) -> None:
        self.body = described.body
        self.hide = described.usage_asked
        self.asked = described.usage_asked or _asked_for_usage(described.body)

    def read(self, chunk: Any) -> bool:
        get = dict.get if type(chunk) is dict else getattr  # `field`, written out (read on every chunk)
        if not self.response_id:  # Azure's first chunk (prompt_filter_results) has an empty id and model
            self.response_id = get(chunk, "id", None)
            self.model = get(chunk, "model", None)
        usage = get(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
            self.tier = get(chunk, "service_tier", None)
        choices = get(chunk, "choices", None)
        if choices:
            for choice in choices:  # the text streamed, for an estimate should no usage come (written out)
                delta = get(choice, "delta", None)
                if delta is None:  # legacy completions
                    text = get(choice, "text", None)
                    if type(text) is str:
                        self.characters += len(text)
                    continue
                text = get(delta, "content", None)
                if text:
                    self.characters += len(text)
                elif text is None:  # a tool call or refusal delta (or the role's, the finish's)
                    self.characters += _other_characters(delta)
        if self.hide:
            if usage is not None and not choices:
                return True  # the usage chunk we asked for: not the app's
            _hide_usage(chunk)
        return False

    def attributes(self) -> dict[str, Any]:
        attributes = _usage_attributes(self.usage)
        if self.usage is None:
            add_estimate(attributes, self.body or {}, self.characters, CUT_SHORT if self.asked else NOT_ASKED)
        if isinstance(self.model, str):
            attributes[names.RESPONSE_MODEL] = self.model
        if isinstance(self.response_id, str):
            attributes[names.RESPONSE_ID] = self.response_id
        if isinstance(self.tier, str):
            attributes[names.SERVICE_TIER] = self.tier
        return attributes


def _other_characters(delta: Any) -> int:
    """Characters of a chat delta's refusal and tool call arguments."""
    characters = 0
    refusal = field(delta, "refusal")
    if isinstance(refusal, str):
        characters += len(refusal)
    for call in field(delta, "tool_calls") or ():
        arguments = field(field(call, "function"), "arguments")
        if isinstance(arguments, str):
            characters += len(arguments)
    return characters


class ResponseEventReader(StreamReader):
    """Responses API streams: the final `response.completed` (or `.incomplete`/`.failed`) event has it all. A
    stream closed before it is estimated from the text streamed (`ChunkReader`)."""

    __slots__ = ("response", "body", "characters")

    def __init__(self) -> None:
        self.response = self.body = None
        self.characters = 0

    def begin(self, described: Described, record_result: Any) -> None:
        self.body = described.body

    def read(self, event: Any) -> None:
        response = field(event, "response")
        if response is not None:
            self.response = response  # every lifecycle event carries the response so far; keep the latest
        else:
            delta = field(event, "delta")
            if isinstance(delta, str):  # output text, refusal, function call arguments
                self.characters += len(delta)

    def attributes(self) -> dict[str, Any]:
        attributes = read_response(self.response) if self.response is not None else {}
        if names.INPUT_TOKENS not in attributes:
            if self.body:
                add_estimate(attributes, self.body, self.characters, CUT_SHORT)
            else:
                attributes[names.USAGE_MISSING] = True
        return attributes


def _chunk_finish_reasons(last_two: tuple[Any, Any]) -> list[str] | None:
    """A chat or completion stream: the finish reasons are in the last chunk with choices."""
    for chunk in reversed(last_two):
        reasons = semconv.openai_finish_reasons(chunk) if chunk is not None else None
        if reasons:
            return reasons
    return None


def _response_event_finish_reasons(last_two: tuple[Any, Any]) -> list[str] | None:
    return semconv.openai_finish_reasons(field(last_two[1], "response"))


def _chunk_text(chunk: Any) -> str | None:
    """The text a chat (`delta.content`) or legacy completion (`text`) chunk adds to its first choice."""
    choices = field(chunk, "choices")
    if not choices:
        return None
    delta = field(choices[0], "delta")
    return field(delta, "content") if delta is not None else field(choices[0], "text")


def _no_text(event: Any) -> None:  # Responses API streams: the last event holds the whole response
    return None


_recorded = Once()  # background response ids and (batch or file id, custom_id) whose usage was recorded
_batch_of_file: dict[str, str] = {}  # a batch's output file id -> the batch id (from batches.create/retrieve/list)
_PENDING = ("queued", "in_progress")
BACKGROUND_NOTE = "background response: its usage is recorded when it is retrieved"


def read_created_response(response: Any) -> dict[str, Any]:
    """`responses.create`: a background response comes back queued; its usage comes with a later retrieve."""
    attributes = read_response(response)
    if field(response, "background") is True:
        if field(response, "status") in _PENDING or names.INPUT_TOKENS not in attributes:
            attributes[names.USAGE_ELSEWHERE] = True
            attributes[names.USAGE_NOTE] = BACKGROUND_NOTE
        elif attributes.get(names.RESPONSE_ID):
            _recorded.first(attributes[names.RESPONSE_ID])  # already done: a later retrieve records nothing
    return attributes


def read_retrieved_response(response: Any) -> dict[str, Any]:
    """`responses.retrieve`: the usage of a finished background response, the first time it is seen; every
    other retrieve (a poll while it runs, a response its create already recorded) makes no row."""
    attributes = read_response(response)
    response_id = attributes.get(names.RESPONSE_ID)
    if (field(response, "background") is True and field(response, "status") not in _PENDING
            and names.INPUT_TOKENS in attributes and response_id and _recorded.first(response_id)):
        return attributes
    kept = {key: attributes[key] for key in (names.RESPONSE_ID, names.RESPONSE_MODEL) if key in attributes}
    kept[names.USAGE_ELSEWHERE] = True
    return kept


def read_batches(batch: Any) -> dict[str, Any]:
    """`batches.create/retrieve/list`: remembers which batch each output file belongs to."""
    data = field(batch, "data")
    batches = data if isinstance(data, list) else [batch]
    for one in batches:
        batch_id, output_file_id = field(one, "id"), field(one, "output_file_id")
        if isinstance(batch_id, str) and isinstance(output_file_id, str):
            if len(_batch_of_file) >= 10_000:
                _batch_of_file.clear()
            _batch_of_file[output_file_id] = batch_id
    batch_id = field(batch, "id")
    return {names.BATCH_ID: batch_id} if data is None and isinstance(batch_id, str) else {}


_OPERATIONS = {"chat.completion": "chat", "response": "chat", "text_completion": "text_completion",
               "list": "embeddings"}


def batch_output_results(content: Any, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """`files.content` of a Batch API output file (JSONL: `custom_id`, `response.body` with the usage): each
    result a call priced at the batch rate. Any other file stops at its first line."""
    data = getattr(content, "content", None)
    if not isinstance(data, bytes):
        return
    file_id = request.get("file_id")
    batch_id = _batch_of_file.get(file_id)
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            return
        if type(item) is not dict or "custom_id" not in item or "response" not in item:
            return  # not a batch's output file
        body = field(item["response"], "body")
        if type(body) is not dict or body.get("usage") is None or not _recorded.first((batch_id or file_id, item["custom_id"])):
            continue
        attributes = read_response(body)
        attributes[names.OPERATION] = _OPERATIONS.get(body.get("object"), "chat")
        if isinstance(body.get("model"), str):
            attributes[names.REQUEST_MODEL] = body["model"]
        attributes[names.SERVICE_TIER] = "batch"
        if batch_id:
            attributes[names.BATCH_ID] = batch_id
        if isinstance(item["custom_id"], str):
            attributes[names.BATCH_CUSTOM_ID] = item["custom_id"]
        yield attributes


def _nothing(result: Any) -> dict[str, Any]:
    return {}


ENDPOINTS = {
    "/chat/completions": Endpoint("chat", read_response, ChunkReader, semconv.openai_finish_reasons,
                                  _chunk_finish_reasons, semconv.openai_output, _chunk_text),
    "/responses": Endpoint("chat", read_created_response, ResponseEventReader, semconv.openai_finish_reasons,
                           _response_event_finish_reasons, semconv.openai_output, _no_text),
    "/completions": Endpoint("text_completion", read_response, ChunkReader, semconv.openai_finish_reasons,
                             _chunk_finish_reasons, semconv.openai_output, _chunk_text),
    "/embeddings": Endpoint("embeddings", read_response),
}
RETRIEVED_RESPONSE = Endpoint("chat", read_retrieved_response, ResponseEventReader, spends=False)
BATCHES = Endpoint("batch", read_batches, spends=False)
BATCH_OUTPUT = Endpoint("batch_results", _nothing, results=batch_output_results, spends=False)

_RESPONSE_PATH = re.compile(r"^/responses/[^/]+$")
_BATCH_PATH = re.compile(r"^/batches(?:/[^/]+)?$")
_FILE_CONTENT_PATH = re.compile(r"^/files/([^/]+)/content$")


def describing_fetches(describe: Any) -> Any:
    """Wraps `describe` to see the calls that fetch what already ran: a background response retrieved, the
    batches (for their output files) and a batch's output file. Their spans are no LLM calls of their own: the
    usage they carry is recorded once, on the spans `read_retrieved_response` and `batch_output_results` make."""

    def describe_fetch(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described | None:
        described = describe(wrapped, instance, args, kwargs)
        if described is not None:
            return described
        options = args[1] if len(args) > 1 else kwargs["options"]
        url, method = options.url, str(options.method).lower()
        if method == "get" and _RESPONSE_PATH.match(url):
            return Described(RETRIEVED_RESPONSE, {}, None, bool(kwargs.get("stream")))
        if _BATCH_PATH.match(url) and method in ("get", "post"):
            return Described(BATCHES, {}, None, False)
        match = _FILE_CONTENT_PATH.match(url) if method == "get" else None
        if match:
            return Described(BATCH_OUTPUT, {"file_id": match.group(1)}, None, False)
        return None

    return describe_fetch


endpoint_for = ENDPOINTS.get  # path -> Endpoint | None (the dict's own method: no Python frame per call)


_SYSTEM_ROLES = ("system", "developer")


def prefix(body: Mapping[str, Any]) -> list[Any]:
    """The stable prompt prefix: instructions, the leading system/developer messages, the tool definitions."""
    parts: list[Any] = []
    instructions = body.get("instructions")  # Responses API
    if isinstance(instructions, str):
        parts.append(instructions)
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")  # Responses API: a string, or a list of items
    if isinstance(messages, list):
        for message in messages:
            if type(message) is not dict or message.get("role") not in _SYSTEM_ROLES:
                break
            parts.append(message.get("content"))
    for key in ("tools", "functions"):
        tools = body.get(key)
        if tools:
            parts.append(tools)
    return parts


_USAGE_STREAM_ENDPOINTS = ("/chat/completions", "/completions")

# Providers whose servers are known to accept `stream_options.include_usage` (their API docs say so). Any other
# server (an unknown host, a local model server, a gateway) is not sent it: an unknown field can fail a call
# that would have succeeded without us. `OTEL_LLMCOST_OPENAI_INCLUDE_USAGE` extends or narrows the list.
INCLUDE_USAGE_PROVIDERS = frozenset({"openai", "azure.ai.openai", "deepseek", "groq", "x_ai", "gcp.gemini"})
_EVERY_SERVER = ("true", "all", "*", "1", "yes", "on")
_NO_SERVER = ("false", "none", "0", "no", "off")


@dataclass(frozen=True)
class UsagePolicy:
    """Which servers are asked for a stream's usage: by provider name (`openai`, `groq`, the names of
    `OTEL_LLMCOST_PROVIDER_HOSTS`) or by host."""

    every_server: bool = False
    names: frozenset[str] = INCLUDE_USAGE_PROVIDERS

    @classmethod
    def parse(cls, value: Any) -> "UsagePolicy":
        """`true`/`all`: every server; `false`/`none`: none; otherwise a comma-separated list of provider
        names and hosts added to the default list, `-name` taking one off it (`none,openai`: only OpenAI)."""
        if value is True or value is False:
            return cls(every_server=value, names=INCLUDE_USAGE_PROVIDERS if value else frozenset())
        items = [item.strip().lower() for item in str(value or "").split(",") if item.strip()]
        if len(items) == 1 and items[0] in _EVERY_SERVER:
            return cls(every_server=True)
        chosen = set(INCLUDE_USAGE_PROVIDERS)
        for item in items:
            if item in _NO_SERVER:
                chosen.clear()
            elif item.startswith("-"):
                chosen.discard(item[1:].strip())
            else:
                chosen.add(item.lstrip("+"))
        return cls(names=frozenset(chosen))

    def asks(self, host: str, is_azure: bool) -> bool:
        if self.every_server:
            return True
        host = host.lower()
        return host in self.names or _named_provider(host, is_azure) in self.names


def _named_provider(host: str, is_azure: bool) -> str | None:
    """The provider a host is known to be (the user's mapping, Azure, the known hosts); None for a host nobody
    named (which `provider_name` prices as `openai`, but is not known to be OpenAI's server)."""
    named = hosts.named_provider(host)
    if named and named.lower() != hosts.HOSTED:
        return named.lower()
    if is_azure or host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    return hosts.match_host(host, KNOWN_HOSTS)  # (a host mapped to `hosted` is asked only when named)


_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def asking_for_usage(describe: Any, policy: UsagePolicy) -> Any:
    """Wraps `describe` so that streamed chat and completion requests to servers the policy names ask for the
    usage report (`stream_options.include_usage`) when the app did not say either way; `ChunkReader` then hides
    from the app what that added. Not for raw responses (`with_raw_response`, `with_streaming_response`): the
    app may read their body itself, where nothing can be hidden."""
    decided: dict[tuple[str, bool], bool] = {}

    def describe_and_ask(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described | None:
        described = describe(wrapped, instance, args, kwargs)
        if described is None or not described.stream:
            return described
        options = args[1] if len(args) > 1 else kwargs["options"]
        body = described.body
        stream_options = body.get("stream_options")
        if options.url not in _USAGE_STREAM_ENDPOINTS or type(body) is not dict or not (
            stream_options is None or type(stream_options) is dict and "include_usage" not in stream_options
        ):
            return described
        headers = options.headers
        if isinstance(headers, Mapping) and headers.get(_RAW_RESPONSE_HEADER):
            return described
        base_url = getattr(instance, "_base_url", None) or instance.base_url
        key = (base_url.host, "Azure" in type(instance).__name__)
        asks = decided.get(key)
        if asks is None:
            if len(decided) >= 256:
                decided.clear()
            asks = decided[key] = policy.asks(*key)
        if not asks:
            return described
        options.json_data = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
        return described._replace(usage_asked=True)

    return describe_and_ask


class OpenAIInstrumentor(SdkInstrumentor):
    """Traces every LLM call made through the `openai` SDK (sync and async, streaming included).

    Streamed chat and completion requests that do not say otherwise ask for `stream_options.include_usage`
    when the server is known to accept it, so that their cost is known; the app sees the stream it asked for
    (see `ChunkReader`). `instrument(include_usage=...)` (True, False or a list as in the environment) or env
    `OTEL_LLMCOST_OPENAI_INCLUDE_USAGE` (see `UsagePolicy.parse`) chooses the servers.
    """

    sync_requests = (("openai._base_client", "SyncAPIClient.request"),)
    async_requests = (("openai._base_client", "AsyncAPIClient.request"),)
    closes = (
        ("openai._streaming", "Stream.close"),
        ("openai._streaming", "AsyncStream.close"),
        ("openai.lib.streaming.chat._completions", "ChatCompletionStream.close"),
        ("openai.lib.streaming.chat._completions", "AsyncChatCompletionStream.close"),
        ("openai.lib.streaming.responses._responses", "ResponseStream.close"),
        ("openai.lib.streaming.responses._responses", "AsyncResponseStream.close"),
    )
    parses = (("openai._response", "BaseAPIResponse._parse"),)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.0",)

    def provider(self, **kwargs: Any) -> Provider:
        import openai
        from openai._legacy_response import LegacyAPIResponse
        from openai._response import BaseAPIResponse

        include_usage = kwargs.get("include_usage")
        if include_usage is None:
            include_usage = os.environ.get("OTEL_LLMCOST_OPENAI_INCLUDE_USAGE")
        policy = UsagePolicy.parse(include_usage)
        describe = describing_fetches(stainless_describe(endpoint_for))
        return Provider(
            describe=asking_for_usage(describe, policy) if policy.every_server or policy.names else describe,
            provider_name=provider_name,
            request_attributes=request_attributes,
            prefix=prefix,
            stream_types=(openai.Stream,),
            async_stream_types=(openai.AsyncStream,),
            raw_response_types=(LegacyAPIResponse, BaseAPIResponse),
            server=semconv.stainless_server,
            input_messages=semconv.openai_input,
        )
