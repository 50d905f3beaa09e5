"""The replay server drives the REAL openai / anthropic SDKs (no instrumentation involved).

Each test replays recorded calls (built from the recorded request body, ``stream`` included) and checks that
the usage the SDK parsed equals ``expected_usage``, which reads the raw recorded bodies independently.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import anthropic
import openai
import pytest

try:  # tests/ as a package, or (no __init__.py) tests/ on sys.path
    from . import replay
except ImportError:
    import replay

ReplayServer, expected_usage, load = replay.ReplayServer, replay.expected_usage, replay.load



# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def _bodies(server: ReplayServer) -> list[dict]:
    return [dict(i["request"]["body"]) for i in server.interactions]


def _openai(server: ReplayServer, cls=openai.OpenAI):
    return cls(base_url=server.openai_base_url, api_key="test", max_retries=0)


def _anthropic(server: ReplayServer, cls=anthropic.Anthropic):
    return cls(base_url=server.anthropic_base_url, api_key="test", max_retries=0)


def _merge(usage: dict | None, newer: dict) -> dict:
    """message_start usage + message_delta usage: the delta's non-null values win."""
    merged = dict(usage or {})
    for key, value in newer.items():
        if value is not None or key not in merged:
            merged[key] = value
    return merged


def _check(expected: dict, usage, model, rid) -> None:
    """``usage`` as the SDK parsed it (a model with to_dict(), a dict, or None) equals the recorded usage."""
    if usage is not None and not isinstance(usage, dict):
        usage = usage.to_dict()
    assert usage == expected["usage"]
    assert model == expected["model"]
    assert rid == expected["id"]


def _all_served(server: ReplayServer) -> None:
    assert server.unmatched == []
    assert server.remaining() == []


def _openai_stream_usage(chunks) -> object:
    """The usage of the last chunk that carries one (None when the stream carries none)."""
    usages = [c.usage for c in chunks if getattr(c, "usage", None) is not None]
    return usages[-1] if usages else None


def _first(values):
    return next((v for v in values if v), None)


def _anthropic_stream_usage(events) -> tuple[dict | None, str | None, str | None]:
    usage = model = rid = None
    for event in events:
        if event.type == "message_start":
            usage, model, rid = event.message.usage.to_dict(), event.message.model, event.message.id
        elif event.type == "message_delta":
            usage = _merge(usage, event.usage.to_dict())
    return usage, model, rid


# ----------------------------------------------------------------------------------------------------------
# OpenAI chat completions
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "openai/test_chat/test_chat",
        "openai/test_prompt_caching/test_openai_prompt_caching",  # cached_tokens 1024 in the 2nd call
        "openai/test_chat/test_chat_reasoning",  # reasoning_tokens
        "openai/test_chat/test_chat_with_service_tier",  # service_tier=priority
    ],
)
def test_openai_chat_sync(name):
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _openai(server)
        for body, exp in zip(_bodies(server), expected):
            resp = client.chat.completions.create(**body)
            _check(exp, resp.usage, resp.model, resp.id)
        _all_served(server)
        assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
        assert server.requests[0]["body"] == server.interactions[0]["request"]["body"]


def test_openai_prompt_caching_reports_cached_tokens():
    usages = [e["usage"] for e in expected_usage("openai/test_prompt_caching/test_openai_prompt_caching")]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 1024, 0, 0]


@pytest.mark.parametrize(
    "name",
    ["openai/test_prompt_caching/test_openai_prompt_caching_async", "openai/test_chat/test_with_asyncio_run"],
)
def test_openai_chat_async(name):
    expected = expected_usage(name)

    async def run(server):
        async with _openai(server, openai.AsyncOpenAI) as client:
            for body, exp in zip(_bodies(server), expected):
                resp = await client.chat.completions.create(**body)
                _check(exp, resp.usage, resp.model, resp.id)

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


@pytest.mark.parametrize(
    "name, has_usage",
    [
        ("openai/test_chat/test_chat_streaming", True),  # usage in the last chunk (DeepSeek-style mock)
        ("openai/test_streaming_with_api_usage/test_streaming_with_api_usage_capture", True),  # DeepSeek, /beta
        ("openai/test_chat/test_chat_tools_streaming", False),  # real OpenAI stream without usage
    ],
)
def test_openai_chat_streaming_sync(name, has_usage):
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _openai(server)
        for body, exp in zip(_bodies(server), expected):
            assert body["stream"] is True and exp["stream"] is True
            chunks = list(client.chat.completions.create(**body))
            assert chunks
            _check(exp, _openai_stream_usage(chunks), _first(c.model for c in chunks), _first(c.id for c in chunks))
            assert (exp["usage"] is not None) is has_usage
        _all_served(server)


def test_openai_chat_streaming_async():
    name = "openai/test_chat/test_chat_async_streaming"
    expected = expected_usage(name)

    async def run(server):
        async with _openai(server, openai.AsyncOpenAI) as client:
            for body, exp in zip(_bodies(server), expected):
                stream = await client.chat.completions.create(**body)
                chunks = [c async for c in stream]
                _check(exp, _openai_stream_usage(chunks), _first(c.model for c in chunks), _first(c.id for c in chunks))
                assert exp["usage"] is None  # these recordings never asked for stream_options.include_usage

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


def test_openai_chat_streaming_partial_consumption_does_not_hang():
    name = "openai/test_chat/test_chat_streaming_partial_consumption"
    with ReplayServer(name) as server:
        client = _openai(server)
        for body in _bodies(server):
            stream = client.chat.completions.create(**body)
            next(iter(stream))
            stream.close()
        _all_served(server)


# ----------------------------------------------------------------------------------------------------------
# Azure OpenAI
# ----------------------------------------------------------------------------------------------------------


def test_azure_chat_sync():
    name = "openai/test_azure/test_chat"
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = openai.AzureOpenAI(azure_endpoint=server.url, api_key="test", api_version="2024-02-01", max_retries=0)
        for body, exp in zip(_bodies(server), expected):
            resp = client.chat.completions.create(**body)  # model = deployment name "openllmetry-testing"
            _check(exp, resp.usage, resp.model, resp.id)
        _all_served(server)
        assert server.requests[0]["path"] == "/openai/deployments/openllmetry-testing/chat/completions"
        assert server.requests[0]["query"] == {"api-version": "2024-02-01"}
        assert server.openai_base_url == server.url + "/openai/deployments/openllmetry-testing"


def test_azure_chat_streaming_async():
    name = "openai/test_azure/test_chat_async_streaming"
    expected = expected_usage(name)

    async def run(server):
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=server.url, api_key="test", api_version="2024-02-01", max_retries=0
        ) as client:
            for body, exp in zip(_bodies(server), expected):
                chunks = [c async for c in await client.chat.completions.create(**body)]
                # the first Azure chunk (prompt_filter_results) has model "" and id ""
                _check(exp, _openai_stream_usage(chunks), _first(c.model for c in chunks), _first(c.id for c in chunks))

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


def test_azure_recorded_error_status_is_replayed():
    name = "openai/test_azure/test_chat_reasoning"
    expected = expected_usage(name)
    assert [e["status"] for e in expected] == [200, 404, 404, 404]
    with ReplayServer(name) as server:
        client = openai.AzureOpenAI(azure_endpoint=server.url, api_key="test", api_version="2024-02-01", max_retries=0)
        bodies = _bodies(server)
        resp = client.chat.completions.create(**bodies[0])
        _check(expected[0], resp.usage, resp.model, resp.id)
        assert resp.usage.completion_tokens_details.reasoning_tokens == 192
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(**bodies[1])


# ----------------------------------------------------------------------------------------------------------
# OpenAI Responses API
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["openai/test_responses/test_responses_with_service_tier", "openai/test_responses/test_responses_reasoning"]
)
def test_openai_responses_sync(name):
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _openai(server)
        for body, exp in zip(_bodies(server), expected):
            resp = client.responses.create(**body)
            _check(exp, resp.usage, resp.model, resp.id)
        _all_served(server)


def test_openai_responses_streaming_sync():
    name = "openai/test_responses/test_responses_streaming"
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _openai(server)
        for body, exp in zip(_bodies(server), expected):
            events = list(client.responses.create(**body))
            completed = [e.response for e in events if e.type == "response.completed"]
            assert len(completed) == 1
            _check(exp, completed[0].usage, completed[0].model, completed[0].id)
        _all_served(server)


def test_openai_responses_streaming_async():
    name = "openai/test_responses/test_responses_streaming_async"
    expected = expected_usage(name)

    async def run(server):
        async with _openai(server, openai.AsyncOpenAI) as client:
            for body, exp in zip(_bodies(server), expected):
                events = [e async for e in await client.responses.create(**body)]
                (final,) = [e.response for e in events if e.type == "response.completed"]
                _check(exp, final.usage, final.model, final.id)

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


# ----------------------------------------------------------------------------------------------------------
# Anthropic messages
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy",  # cache write, then cache read
        "anthropic/test_thinking/test_anthropic_thinking_legacy",
        "anthropic/test_messages/test_anthropic_image_with_history",  # usage.service_tier
    ],
)
def test_anthropic_messages_sync(name):
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _anthropic(server)
        for body, exp in zip(_bodies(server), expected):
            resp = client.messages.create(**body)
            _check(exp, resp.usage, resp.model, resp.id)
        _all_served(server)
        assert {r["path"] for r in server.requests} == {"/v1/messages"}


def test_anthropic_prompt_caching_reports_cache_tokens():
    usages = [e["usage"] for e in expected_usage("anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy")]
    assert [(u["cache_creation_input_tokens"], u["cache_read_input_tokens"]) for u in usages] == [(1163, 0), (0, 1163)]


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_legacy",
        "anthropic/test_thinking/test_async_anthropic_thinking_legacy",
    ],
)
def test_anthropic_messages_async(name):
    expected = expected_usage(name)

    async def run(server):
        async with _anthropic(server, anthropic.AsyncAnthropic) as client:
            for body, exp in zip(_bodies(server), expected):
                resp = await client.messages.create(**body)
                _check(exp, resp.usage, resp.model, resp.id)

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy",
        "anthropic/test_thinking/test_anthropic_thinking_streaming_legacy",
        # message_delta also carries input/cache fields; message_start carries cache_creation {5m, 1h}
        "anthropic/test_messages/test_anthropic_streaming_helper_methods_legacy",
    ],
)
def test_anthropic_streaming_sync(name):
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _anthropic(server)
        for body, exp in zip(_bodies(server), expected):
            assert body["stream"] is True and exp["stream"] is True
            events = list(client.messages.create(**body))
            assert events[-1].type == "message_stop"
            _check(exp, *_anthropic_stream_usage(events))
        _all_served(server)


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/test_prompt_caching/test_anthropic_prompt_caching_async_stream_legacy",
        "anthropic/test_thinking/test_async_anthropic_thinking_streaming_legacy",
    ],
)
def test_anthropic_streaming_async(name):
    expected = expected_usage(name)

    async def run(server):
        async with _anthropic(server, anthropic.AsyncAnthropic) as client:
            for body, exp in zip(_bodies(server), expected):
                events = [e async for e in await client.messages.create(**body)]
                _check(exp, *_anthropic_stream_usage(events))

    with ReplayServer(name) as server:
        asyncio.run(run(server))
        _all_served(server)


@pytest.mark.parametrize(
    "name",
    [
        "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy",
        "anthropic/test_messages/test_anthropic_streaming_helper_methods_legacy",
    ],
)
def test_anthropic_stream_manager_final_message(name):
    """The SDK's own accumulation (messages.stream) agrees with expected_usage's merge."""
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _anthropic(server)
        for body, exp in zip(_bodies(server), expected):
            body.pop("stream")  # messages.stream() sets it itself
            with client.messages.stream(**body) as stream:
                final = stream.get_final_message()
            _check(exp, final.usage, final.model, final.id)
        _all_served(server)


# ----------------------------------------------------------------------------------------------------------
# server behaviour
# ----------------------------------------------------------------------------------------------------------


def test_unmatched_request_fails_clearly():
    with ReplayServer("openai/test_chat/test_chat") as server:
        client = _openai(server)
        with pytest.raises(openai.APIStatusError) as info:
            client.embeddings.create(model="text-embedding-ada-002", input="x")
        assert info.value.status_code == 599
        assert "/v1/embeddings" in str(info.value)
        body = server.interactions[0]["request"]["body"]
        for _ in server.interactions:
            client.chat.completions.create(**body)
        with pytest.raises(openai.APIStatusError, match="no unused recorded interaction"):  # all used up
            client.chat.completions.create(**body)
        assert [r["path"] for r in server.unmatched] == ["/v1/embeddings", "/v1/chat/completions"]
        assert [r["interaction"] for r in server.requests] == [None, 0, 1, 2, 3, None]


def test_raw_http_reply_headers():
    name = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_stream_legacy"
    rec = load(name)
    with ReplayServer(rec) as server:
        req = urllib.request.Request(
            server.url + "/v1/messages?beta=true", data=b'{"x": 1}', headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
            assert resp.status == 200
            assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert resp.headers["request-id"] == "req_01JSeMFFxkhLG8Rhohx2omtN"
            assert int(resp.headers["content-length"]) == len(data)
            assert resp.headers.get("content-encoding") is None
        assert data == rec["interactions"][0]["response"]["body"].encode()
        assert server.requests[0]["body"] == {"x": 1}
        assert server.requests[0]["query"] == {"beta": "true"}

        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + "/nowhere", timeout=10)
        assert info.value.code == 599
        assert json.loads(info.value.read())["error"]["path"] == "/nowhere"


def test_concurrent_requests():
    name = "openai/test_chat/test_chat"
    expected = expected_usage(name)
    with ReplayServer(name) as server:
        client = _openai(server)
        body = _bodies(server)[0]
        with ThreadPoolExecutor(4) as pool:
            ids = set(pool.map(lambda _: client.chat.completions.create(**body).id, range(4)))
        assert ids == {e["id"] for e in expected}
        _all_served(server)


def test_base_urls():
    assert ReplayServer("openai/test_chat/test_chat").path_prefix == "/v1"
    assert ReplayServer("openai/test_streaming_with_api_usage/test_streaming_with_api_usage_capture").path_prefix == (
        "/beta"
    )
    with ReplayServer("anthropic/test_thinking/test_anthropic_thinking_legacy") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.anthropic_base_url == server.url
        assert server.openai_base_url == server.url + "/v1"


# ----------------------------------------------------------------------------------------------------------
# survey: expected_usage parses every recording
# ----------------------------------------------------------------------------------------------------------

ALL = replay.recording_names()


@pytest.mark.parametrize("name", ALL)
def test_expected_usage_parses(name):
    rec = load(name)
    expected = expected_usage(rec)
    assert len(expected) == len(rec["interactions"]) > 0
    for exp, interaction in zip(expected, rec["interactions"]):
        assert set(exp) == {"status", "model", "id", "usage", "stream"}
        assert exp["status"] == interaction["response"]["status"]
        assert exp["usage"] is None or isinstance(exp["usage"], dict)
        ok = exp["status"] == 200
        path = urlsplit(interaction["request"]["uri"]).path
        if ok and (path in ("/v1/messages", "/v1/responses") or path.endswith(("/embeddings", "/invoke"))):
            assert exp["usage"], "Anthropic messages, Responses and embeddings always report usage"
        if ok and exp["stream"] and path == "/v1/messages":
            assert {"input_tokens", "output_tokens"} <= set(exp["usage"])
    ReplayServer(rec)  # builds without starting
