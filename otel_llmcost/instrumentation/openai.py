"""OpenAI (and OpenAI-compatible servers, and Azure OpenAI): endpoints and response readers.

OpenAI's `prompt_tokens` already includes `cached_tokens` (and `cache_write_tokens` where reported),
which is what `gen_ai.usage.input_tokens` asks for: it is copied as is, never added to.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any, Collection, Mapping

from .. import names
from . import semconv
from .core import Described, Endpoint, Provider, StreamReader, env_flag, field, positive_int, stainless_describe
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


def host_mapping(value: str | None) -> dict[str, str]:
    """`OTEL_LLMCOST_PROVIDER_HOSTS`: `host=provider` pairs, comma-separated (`llm.internal=vllm,...`)."""
    mapping = {}
    for pair in (value or "").split(","):
        host, _, provider = pair.partition("=")
        if host.strip() and provider.strip():
            mapping[host.strip().lower()] = provider.strip()
    return mapping


def _match_host(host: str, table: Mapping[str, str]) -> str | None:
    for known, provider in table.items():
        if host == known or host.endswith("." + known):
            return provider
    return None


@lru_cache(maxsize=256)
def _provider_for_host(host: str, is_azure: bool) -> str:
    """Read once per host: the user's mapping, then Azure, then the user's name for any OpenAI-compatible
    server (`OTEL_LLMCOST_OPENAI_PROVIDER`), then the known hosts; unknown hosts are `openai`."""
    host = host.lower()
    named = _match_host(host, host_mapping(os.environ.get("OTEL_LLMCOST_PROVIDER_HOSTS")))
    if named:
        return named
    if is_azure or host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    named = os.environ.get("OTEL_LLMCOST_OPENAI_PROVIDER")
    if named:
        return named
    # Loopback and unknown hosts: an OpenAI-compatible server; price as OpenAI unless the user names it.
    return _match_host(host, KNOWN_HOSTS) or "openai"


# id(base_url) -> (base_url, type of the client, provider): reading the host of a URL costs more than the rest of
# `provider_name`, and a client keeps its base URL object until it is given another one. The URL is kept alive
# here, so its id is not reused.
_provider_names: dict[int, tuple[Any, type, str]] = {}
# Client class -> whether its `base_url` is the SDK's own getter, which returns `_base_url` as is: then that is
# read directly (openai 3.x's getter imports a module on every read, about 1 µs). Any other class (`openai`'s
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
    base_url = client._base_url if plain else client.base_url
    known = _provider_names.get(id(base_url))
    if known is not None and known[0] is base_url and known[1] is kind:
        return known[2]
    name = _provider_for_host(base_url.host, "Azure" in kind.__name__)
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
    Read on every call, so `field` and `positive_int` are written out (see `field`)."""
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
    details = get(usage, "completion_tokens_details", None)
    if details is not None:
        get_detail = dict.get if type(details) is dict else getattr
        reasoning = get_detail(details, "reasoning_tokens", None)
        if type(reasoning) is int and reasoning > 0:
            attributes[names.REASONING_TOKENS] = reasoning
    return attributes


def _responses_usage_attributes(usage: Any) -> dict[str, Any]:
    """Responses API usage: `input_tokens` (cache included), `output_tokens` (reasoning included)."""
    attributes: dict[str, Any] = {}
    value = positive_int(field(usage, "input_tokens"))
    if value is not None:
        attributes[names.INPUT_TOKENS] = value
    value = positive_int(field(usage, "output_tokens"))
    if value is not None:
        attributes[names.OUTPUT_TOKENS] = value
    cached = positive_int(field(field(usage, "input_tokens_details"), "cached_tokens"))
    if cached:
        attributes[names.CACHE_READ_TOKENS] = cached
    reasoning = positive_int(field(field(usage, "output_tokens_details"), "reasoning_tokens"))
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
    return attributes


class ChunkReader(StreamReader):
    """Chat and legacy completion streams: usage arrives in the last chunk, and only when asked for."""

    __slots__ = ("model", "response_id", "tier", "usage")

    def __init__(self) -> None:
        self.model = self.response_id = self.tier = self.usage = None

    def read(self, chunk: Any) -> None:
        get = dict.get if type(chunk) is dict else getattr  # `field`, written out (read on every chunk)
        if not self.response_id:  # Azure's first chunk (prompt_filter_results) has an empty id and model
            self.response_id = get(chunk, "id", None)
            self.model = get(chunk, "model", None)
        usage = get(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
            self.tier = get(chunk, "service_tier", None)

    def attributes(self) -> dict[str, Any]:
        attributes = _usage_attributes(self.usage)
        if self.usage is None:
            attributes[names.USAGE_MISSING] = True
        if isinstance(self.model, str):
            attributes[names.RESPONSE_MODEL] = self.model
        if isinstance(self.response_id, str):
            attributes[names.RESPONSE_ID] = self.response_id
        if isinstance(self.tier, str):
            attributes[names.SERVICE_TIER] = self.tier
        return attributes


class ResponseEventReader(StreamReader):
    """Responses API streams: the final `response.completed` (or `.incomplete`/`.failed`) event has it all."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response = None

    def read(self, event: Any) -> None:
        response = field(event, "response")
        if response is not None:
            self.response = response  # every lifecycle event carries the response so far; keep the latest

    def attributes(self) -> dict[str, Any]:
        attributes = read_response(self.response) if self.response is not None else {}
        if names.INPUT_TOKENS not in attributes:
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


ENDPOINTS = {
    "/chat/completions": Endpoint("chat", read_response, ChunkReader, semconv.openai_finish_reasons,
                                  _chunk_finish_reasons, semconv.openai_output, _chunk_text),
    "/responses": Endpoint("chat", read_response, ResponseEventReader, semconv.openai_finish_reasons,
                           _response_event_finish_reasons, semconv.openai_output, _no_text),
    "/completions": Endpoint("text_completion", read_response, ChunkReader, semconv.openai_finish_reasons,
                             _chunk_finish_reasons, semconv.openai_output, _chunk_text),
    "/embeddings": Endpoint("embeddings", read_response),
}


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


def asking_for_usage(describe: Any) -> Any:
    """Wraps `describe` so that streamed chat and completion requests ask for the usage report
    (`stream_options.include_usage`): the stream then ends with one more chunk, with empty `choices`."""

    def describe_and_ask(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described | None:
        described = describe(wrapped, instance, args, kwargs)
        if described is not None and described.stream:
            options = args[1] if len(args) > 1 else kwargs["options"]
            body = described.body
            stream_options = body.get("stream_options")
            if options.url in _USAGE_STREAM_ENDPOINTS and type(body) is dict and (
                stream_options is None or type(stream_options) is dict and "include_usage" not in stream_options
            ):
                options.json_data = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
        return described

    return describe_and_ask


class OpenAIInstrumentor(SdkInstrumentor):
    """Traces every LLM call made through the `openai` SDK (sync and async, streaming included).

    `instrument(include_usage=True)` (or env `OTEL_LLMCOST_OPENAI_INCLUDE_USAGE=true`) makes streamed chat and
    completion requests that do not say otherwise ask for `stream_options.include_usage`, so that their cost is
    known; the application then sees one extra, final chunk with empty `choices` and the `usage`.
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
            include_usage = env_flag("OTEL_LLMCOST_OPENAI_INCLUDE_USAGE", False)
        describe = stainless_describe(endpoint_for)
        return Provider(
            describe=asking_for_usage(describe) if include_usage else describe,
            provider_name=provider_name,
            request_attributes=request_attributes,
            prefix=prefix,
            stream_types=(openai.Stream,),
            async_stream_types=(openai.AsyncStream,),
            raw_response_types=(LegacyAPIResponse, BaseAPIResponse),
            server=semconv.stainless_server,
            input_messages=semconv.openai_input,
        )
