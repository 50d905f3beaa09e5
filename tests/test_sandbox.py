"""The sandbox must speak the providers' real wire formats: drive it with the real SDKs."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from otel_llmcost.sandbox import Sandbox

LONG_TEXT = "Observability for LLM applications means tracing every call and its cost. " * 80  # ~1500 tokens


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as sb:
        yield sb


@pytest.fixture(scope="module")
def oai(sandbox):
    with openai.OpenAI(base_url=sandbox.openai_base_url, api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(sandbox):
    with anthropic.Anthropic(base_url=sandbox.anthropic_base_url, api_key="test", max_retries=0) as client:
        yield client


def test_urls(sandbox):
    assert sandbox.url.startswith("http://127.0.0.1:")
    assert sandbox.openai_base_url == sandbox.url + "/v1"
    assert sandbox.anthropic_base_url == sandbox.url


def test_chat_completion(oai):
    resp = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me a joke"}])
    assert resp.object == "chat.completion" and resp.model == "gpt-4o-mini"
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.content
    u = resp.usage
    assert u.prompt_tokens > 0 and 20 <= u.completion_tokens <= 400
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 0
    assert u.completion_tokens_details.reasoning_tokens == 0


def test_chat_deterministic_and_capped(oai):
    kwargs = dict(model="gpt-4o", messages=[{"role": "user", "content": "same"}], max_tokens=50)
    a, b = oai.chat.completions.create(**kwargs), oai.chat.completions.create(**kwargs)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.completion_tokens == b.usage.completion_tokens <= 50
    assert a.id != b.id


def test_reasoning_tokens(oai):
    resp = oai.chat.completions.create(
        model="o4-mini", messages=[{"role": "user", "content": "think"}], max_completion_tokens=2000
    )
    details = resp.usage.completion_tokens_details
    assert resp.usage.completion_tokens <= 2000
    assert 0 <= details.reasoning_tokens < resp.usage.completion_tokens


def test_chat_stream_without_usage(oai):
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).endswith(".")


def test_chat_stream_with_usage(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 20
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


def test_async_chat_stream(sandbox):
    async def run():
        async with openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="test", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi async"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            return [c async for c in stream]

    chunks = asyncio.run(asyncio.wait_for(run(), timeout=5))
    assert chunks[-1].usage.total_tokens > 0


def test_openai_prompt_cache(oai):
    messages = [{"role": "system", "content": LONG_TEXT}, {"role": "user", "content": "Summarize (openai cache)"}]
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert first.usage.prompt_tokens >= 1024
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 1024 <= cached <= second.usage.prompt_tokens and cached % 128 == 0
    # a follow-up question on the same prefix reuses the system prompt's cache
    follow_up = messages[:1] + [{"role": "user", "content": "?"}]
    follow = oai.chat.completions.create(model="gpt-4o-mini", messages=follow_up)
    assert follow.usage.prompt_tokens_details.cached_tokens >= 1024


def test_anthropic_message(claude):
    msg = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    )
    assert msg.type == "message" and msg.stop_reason == "end_turn" and msg.content[0].type == "text"
    assert msg.usage.input_tokens > 0 and 20 <= msg.usage.output_tokens <= 100
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert msg.usage.service_tier == "standard"


def test_anthropic_raw_stream(claude):
    events = list(
        claude.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in types
    assert events[0].message.usage.output_tokens == 1
    assert events[-2].usage.output_tokens >= 20


def test_anthropic_stream_helper(claude):
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text
    assert final.usage.output_tokens >= 20 and final.usage.input_tokens > 0


def test_anthropic_prompt_cache(claude):
    system = [{"type": "text", "text": LONG_TEXT + " (anthropic)", "cache_control": {"type": "ephemeral"}}]
    kwargs = dict(model="claude-sonnet-4-6", max_tokens=50, system=system, messages=[{"role": "user", "content": "Q"}])
    first = claude.messages.create(**kwargs).usage
    second = claude.messages.create(**kwargs).usage
    assert first.cache_creation_input_tokens >= 1024 and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens < 100  # input_tokens excludes the cached prefix
    # the streamed path reports the same split in message_start
    with claude.messages.stream(**kwargs) as stream:
        usage = stream.get_final_message().usage
    assert usage.cache_read_input_tokens == first.cache_creation_input_tokens


def test_anthropic_cache_1h_and_short_prefix(claude):
    long_1h = [{"type": "text", "text": LONG_TEXT + " (1h)", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    usage = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=20, system=long_1h, messages=[{"role": "user", "content": "Q"}]
    ).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == usage.cache_creation_input_tokens >= 1024
    short = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    usage = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=20, system=short, messages=[{"role": "user", "content": "Q"}]
    ).usage
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0


def test_responses(oai):
    resp = oai.responses.create(model="gpt-4.1-nano", input="What is the capital of France?")
    assert resp.status == "completed" and resp.output_text
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.usage.input_tokens_details.cached_tokens == 0


def test_responses_reasoning(oai):
    resp = oai.responses.create(model="gpt-5-nano", input="Count r's in strawberry", max_output_tokens=1000)
    assert [item.type for item in resp.output][-1] == "message"
    assert resp.usage.output_tokens_details.reasoning_tokens <= resp.usage.output_tokens <= 1000


def test_responses_stream(oai):
    events = list(oai.responses.create(model="gpt-4.1-nano", input="Tell me a story", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens >= 20
    with oai.responses.stream(model="gpt-4.1-nano", input="Tell me a story") as stream:
        final = stream.get_final_response()
    assert final.output_text == text


def test_embeddings(oai):
    default = oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])  # SDK asks base64
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
    floats = oai.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(default.data[0].embedding, abs=1e-6)


def test_openai_error(oai):
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="sandbox-error-429", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        oai.responses.create(model="sandbox-error-500", input="x")


def test_anthropic_error(claude):
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(model="sandbox-error-429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model="sandbox-error-529", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529


def test_unknown_path(sandbox):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(sandbox.url + "/v1/nope", data=b"{}", method="POST"), timeout=5)
    assert info.value.code == 404
    assert json.loads(info.value.read())["error"]["type"] == "invalid_request_error"
