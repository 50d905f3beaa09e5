"""What the recordings lack, from written fixtures (tests/fixtures/, each says it was written, not recorded):
Google GenAI (`google-genai`, sync/async, streaming, Vertex) and Anthropic 1-hour cache writes with web search.

The fixtures are served over real HTTP by `tests/replay.ReplayServer`; the real SDKs call them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anthropic
import pytest

from otel_llmcost import names

try:
    from . import replay
except ImportError:
    import replay

FIXTURES = Path(__file__).parent / "fixtures"

genai = pytest.importorskip("google.genai", reason="google-genai is not installed")
from google.genai import types as genai_types  # noqa: E402

from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor  # noqa: E402


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def usages(recording: dict) -> list[dict]:
    """Every interaction's usage as the fixture's raw body says it (for streams: the last chunk's)."""
    out = []
    for interaction in recording["interactions"]:
        body = interaction["response"]["body"]
        if body.lstrip().startswith(("data:", "event:")):
            events = [json.loads(data) for _, data in replay.iter_sse(body)]
            out.append([e.get("usageMetadata") or e.get("usage") for e in events if e.get("usageMetadata") or e.get("usage")][-1])
        else:
            out.append(json.loads(body).get("usageMetadata") or json.loads(body).get("usage"))
    return out


@pytest.fixture(scope="module")
def google_tracing(tracing):
    provider, _ = tracing
    GoogleGenAIInstrumentor().instrument(tracer_provider=provider)
    yield
    GoogleGenAIInstrumentor().uninstrument()


def gemini(server, **kwargs):
    return genai.Client(
        api_key="test", http_options=genai_types.HttpOptions(base_url=server.url, api_version="v1beta"), **kwargs
    )


def expected_gemini(usage: dict) -> dict:
    """Gemini usage -> our attributes, written out from the documented semantics."""
    expected = {
        names.INPUT_TOKENS: usage["promptTokenCount"] + usage.get("toolUsePromptTokenCount", 0),
        names.OUTPUT_TOKENS: usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0),
    }
    if usage.get("thoughtsTokenCount"):
        expected[names.REASONING_TOKENS] = usage["thoughtsTokenCount"]
    if usage.get("cachedContentTokenCount"):
        expected[names.CACHE_READ_TOKENS] = usage["cachedContentTokenCount"]
    return expected


USAGE_KEYS = (names.INPUT_TOKENS, names.OUTPUT_TOKENS, names.REASONING_TOKENS, names.CACHE_READ_TOKENS,
              names.CACHE_WRITE_TOKENS)


def usage_of(span) -> dict:
    return {key: span.attributes[key] for key in USAGE_KEYS if key in span.attributes}


@pytest.mark.parametrize("is_async", [False, True])
def test_gemini_generate_content(is_async, google_tracing, spans):
    rec = fixture("google_genai/generate_content.json")
    config = {"system_instruction": "You are a physicist."}
    with replay.ReplayServer(rec) as server:
        client = gemini(server)
        if is_async:
            async def run():
                return [await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Why?",
                                                                  config=config) for _ in range(2)]
            results = asyncio.run(run())
        else:
            results = [client.models.generate_content(model="gemini-2.5-flash", contents="Why?", config=config)
                       for _ in range(2)]
        assert server.unmatched == []
    assert all(type(r) is genai_types.GenerateContentResponse for r in results)
    assert results[0].text == "Rayleigh scattering."
    got = spans.get_finished_spans()
    assert len(got) == 2
    for span, usage, response_id in zip(got, usages(rec), ("resp-gen-0", "resp-gen-1")):
        assert span.name == "generate_content gemini-2.5-flash"
        assert span.attributes[names.PROVIDER] == "gcp.gemini"
        assert span.attributes[names.OPERATION] == "generate_content"
        assert span.attributes[names.REQUEST_MODEL] == "gemini-2.5-flash"
        assert span.attributes[names.RESPONSE_MODEL] == "gemini-2.5-flash"
        assert span.attributes[names.RESPONSE_ID] == response_id
        assert usage_of(span) == expected_gemini(usage)
        assert len(span.attributes[names.PREFIX_HASH]) == 16
        assert span.attributes[names.PREFIX_LENGTH] == len("You are a physicist.")
    # cached tokens are inside the prompt count: never added on top
    assert got[0].attributes[names.INPUT_TOKENS] == 2250 and got[0].attributes[names.OUTPUT_TOKENS] == 430


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("consume", ["all", "break"])
def test_gemini_generate_content_stream(is_async, consume, google_tracing, spans):
    rec = fixture("google_genai/generate_content_stream.json")
    with replay.ReplayServer(rec) as server:
        client = gemini(server)
        if is_async:
            async def run():
                stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="Why?")
                chunks = []
                async for chunk in stream:
                    chunks.append(chunk)
                    if consume == "break":
                        break
                if consume == "break":
                    await stream.aclose()
                return stream, chunks
            stream, chunks = asyncio.run(run())
            assert type(stream).__name__ == "async_generator"
        else:
            stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents="Why?")
            assert type(stream).__name__ == "generator"
            assert spans.get_finished_spans() == ()
            chunks = []
            for chunk in stream:
                chunks.append(chunk)
                if consume == "break":
                    break
            stream.close()
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.REQUEST_STREAM] is True
    if consume == "all":
        assert "".join(c.text for c in chunks) == "The sky looks blue because of Rayleigh scattering."
        assert usage_of(span) == expected_gemini(usages(rec)[0]) == {
            names.INPUT_TOKENS: 12, names.OUTPUT_TOKENS: 214, names.REASONING_TOKENS: 200}
        assert span.attributes[names.RESPONSE_ID] == "resp-stream-0"
    else:  # what was seen before the app stopped reading
        assert len(chunks) == 1
        assert usage_of(span) == {names.INPUT_TOKENS: 12, names.OUTPUT_TOKENS: 3}


def test_gemini_vertex_client_is_vertex_ai(google_tracing, spans):
    rec = fixture("google_genai/generate_content.json")
    with replay.ReplayServer(rec) as server:
        client = genai.Client(vertexai=True, api_key="test",
                              http_options=genai_types.HttpOptions(base_url=server.url))
        with pytest.raises(Exception):  # the fixture holds Gemini API paths, not Vertex ones: an HTTP error
            client.models.generate_content(model="gemini-2.5-flash", contents="Why?")
    (span,) = spans.get_finished_spans()
    assert span.attributes[names.PROVIDER] == "gcp.vertex_ai"
    assert span.attributes[names.ERROR_TYPE]


def test_gemini_uninstrument_restores_the_methods(tracing):
    from google.genai import models

    GoogleGenAIInstrumentor().instrument(tracer_provider=tracing[0])
    assert hasattr(models.Models._generate_content, "__wrapped__")
    GoogleGenAIInstrumentor().uninstrument()
    assert not hasattr(models.Models._generate_content, "__wrapped__")
    assert not hasattr(models.AsyncModels._generate_content_stream, "__wrapped__")


# -- Anthropic: 1-hour cache writes and web search ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_one_hour_cache_write_and_web_search(stream, spans):
    rec = fixture("anthropic/one_hour_cache_write_stream.json" if stream else "anthropic/one_hour_cache_write.json")
    body = rec["interactions"][0]["request"]["body"]
    with replay.ReplayServer(rec) as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
        if stream:
            with client.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**body)
    usage = usages(rec)[0]
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 2048
    (span,) = spans.get_finished_spans()
    assert usage_of(span) == {
        names.INPUT_TOKENS: 21 + 3072 + 1024,
        names.OUTPUT_TOKENS: usage["output_tokens"],
        names.CACHE_READ_TOKENS: 1024,
        names.CACHE_WRITE_TOKENS: 3072,
    }
    assert span.attributes[names.CACHE_WRITE_1H_TOKENS] == 2048
    assert span.attributes[names.WEB_SEARCH_REQUESTS] == 2
    assert span.attributes[names.PREFIX_LENGTH] > len(body["system"][0]["text"])
