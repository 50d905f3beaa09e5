"""Google GenAI (`google-genai`, the Gemini Developer API and Vertex AI): endpoint and response readers.

Every `generate_content` call (automatic function calling makes several) goes through
`Models._generate_content`, every `generate_content_stream` through `Models._generate_content_stream`
(and their `AsyncModels` twins): those four are wrapped.

Gemini's `prompt_token_count` already includes `cached_content_token_count`, so it is the input as is (plus
`tool_use_prompt_token_count`, the tool results fed back, billed as input); `candidates_token_count` excludes
`thoughts_token_count`, so the output is their sum, and the thoughts are the reasoning tokens.
"""

from __future__ import annotations

import types
from typing import Any, Collection, Mapping

from .. import names
from . import semconv
from .core import (Described, Endpoint, Provider, StreamReader, ToolTracer, add_response_identity, field,
                   non_negative_int, provider_for_base_url)
from .instrumentor import SdkInstrumentor


def provider_name(models: Any) -> str:
    client = getattr(models, "_api_client", None)  # (no public accessor; without it: the Gemini API's name)
    name = "gcp.vertex_ai" if getattr(client, "vertexai", False) else "gcp.gemini"
    base_url = getattr(getattr(client, "_http_options", None), "base_url", None)
    return provider_for_base_url(base_url, name, "googleapis.com") if base_url else name


def usage_attributes(usage: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if usage is None:
        return attributes
    prompt = non_negative_int(field(usage, "prompt_token_count"))
    tool_prompt = non_negative_int(field(usage, "tool_use_prompt_token_count")) or 0
    if prompt is not None:
        attributes[names.INPUT_TOKENS] = prompt + tool_prompt
    candidates = non_negative_int(field(usage, "candidates_token_count"))
    thoughts = non_negative_int(field(usage, "thoughts_token_count")) or 0
    if candidates is not None or thoughts:
        attributes[names.OUTPUT_TOKENS] = (candidates or 0) + thoughts
    if thoughts:
        attributes[names.REASONING_TOKENS] = thoughts
    cached = non_negative_int(field(usage, "cached_content_token_count"))
    if cached:
        attributes[names.CACHE_READ_TOKENS] = cached
    for details, by_modality in _MODALITY_DETAILS:
        for item in field(usage, details) or ():
            name = by_modality.get(_modality(field(item, "modality")))
            count = non_negative_int(field(item, "token_count"))
            if name is not None and count:
                attributes[name] = attributes.get(name, 0) + count
    return attributes


# Token counts by modality (billed at their own prices: audio input, image output, ...), as genai-prices'
# extractor reads them: documents count as images; tool-use prompt tokens are input.
_INPUT_MODALITIES = {"AUDIO": names.INPUT_AUDIO_TOKENS, "IMAGE": names.INPUT_IMAGE_TOKENS,
                     "DOCUMENT": names.INPUT_IMAGE_TOKENS, "VIDEO": names.INPUT_VIDEO_TOKENS}
_MODALITY_DETAILS = (
    ("prompt_tokens_details", _INPUT_MODALITIES),
    ("tool_use_prompt_tokens_details", _INPUT_MODALITIES),
    ("cache_tokens_details", {"AUDIO": names.CACHE_READ_AUDIO_TOKENS, "IMAGE": names.CACHE_READ_IMAGE_TOKENS,
                              "DOCUMENT": names.CACHE_READ_IMAGE_TOKENS}),
    ("candidates_tokens_details", {"AUDIO": names.OUTPUT_AUDIO_TOKENS, "IMAGE": names.OUTPUT_IMAGE_TOKENS,
                                   "DOCUMENT": names.OUTPUT_IMAGE_TOKENS, "VIDEO": names.OUTPUT_VIDEO_TOKENS}),
)


def _modality(value: Any) -> str:
    """`MediaModality.AUDIO` (the SDK's enum) or `"AUDIO"` (a raw body) as `AUDIO`."""
    return str(getattr(value, "value", value) or "").upper()


def read_response(response: Any) -> dict[str, Any]:
    return add_response_identity(usage_attributes(field(response, "usage_metadata")), response, "model_version",
                                 "response_id")


class ChunkReader(StreamReader):
    """Each streamed `GenerateContentResponse` carries the usage so far; the last one has it all."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = None

    def read(self, chunk: Any) -> None:
        if field(chunk, "usage_metadata") is not None:
            self.last = chunk

    def attributes(self) -> dict[str, Any]:
        attributes = read_response(self.last) if self.last is not None else {}
        if names.INPUT_TOKENS not in attributes:
            attributes[names.USAGE_MISSING] = True
        return attributes


def _stream_finish_reasons(last_two: tuple[Any, Any]) -> list[str] | None:
    return semconv.google_finish_reasons(last_two[1])


def _chunk_text(chunk: Any) -> str | None:
    """The answer's text in a chunk (its first candidate's text parts, thoughts left out)."""
    candidates = field(chunk, "candidates")
    parts = field(field(candidates[0], "content"), "parts") if candidates else None
    return "".join(t for t in (field(p, "text") for p in parts or () if not field(p, "thought")) if t) or None


GENERATE = Endpoint("generate_content", read_response, ChunkReader, semconv.google_finish_reasons,
                    _stream_finish_reasons, semconv.google_output, _chunk_text)


def describe(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Described:
    return Described(GENERATE, kwargs, kwargs.get("model"), wrapped.__name__.endswith("_stream"))


def prefix(kwargs: Mapping[str, Any]) -> list[Any]:
    """The stable prompt prefix: `config.system_instruction` and `config.tools` (a function passed as a tool
    stands for itself by its qualified name, never by its address)."""
    config = kwargs.get("config")
    if config is None:
        return []
    parts: list[Any] = []
    system = field(config, "system_instruction")
    if system:
        parts.append(system)
    tools = field(config, "tools")
    if tools:
        parts.append([getattr(tool, "__qualname__", None) or tool if callable(tool) else tool for tool in tools])
    return parts


def request_attributes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return semconv.google_request(kwargs)


class GoogleGenAIInstrumentor(SdkInstrumentor):
    """Traces every `generate_content` / `generate_content_stream` call of `google-genai` (sync and async)."""

    sync_requests = (
        ("google.genai.models", "Models._generate_content"),
        ("google.genai.models", "Models._generate_content_stream"),
    )
    async_requests = (
        ("google.genai.models", "AsyncModels._generate_content"),
        ("google.genai.models", "AsyncModels._generate_content_stream"),
    )

    # The functions that run the app's own tools during automatic function calling.
    tool_invocations = (
        ("google.genai._extra_utils", "invoke_function_from_dict_args", False),
        ("google.genai._extra_utils", "invoke_function_from_dict_args_async", True),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("google-genai >= 1.0",)

    def _instrument_more(self) -> None:
        tools = ToolTracer(self._tracer, self._request_tracer.settings)
        for module, name, is_async in self.tool_invocations:
            self._wrap((module, name), tools.async_wrapper if is_async else tools.sync_wrapper)

    def provider(self, **kwargs: Any) -> Provider:
        return Provider(
            describe=describe,
            provider_name=provider_name,
            request_attributes=request_attributes,
            prefix=prefix,
            stream_types=(types.GeneratorType,),
            async_stream_types=(types.AsyncGeneratorType,),
            server=semconv.google_server,
            input_messages=semconv.google_input,
        )
