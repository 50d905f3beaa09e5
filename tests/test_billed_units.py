"""Every billed unit priced: audio and image tokens by modality, per-call tool fees (web and file searches),
Responses API cache writes, Anthropic's speed tier and compaction iterations. The real SDKs call written
fixtures (tests/fixtures/) served on 127.0.0.1; their spans go to a real collector; each stored cost is exact to
the nano-dollar against genai-prices, with the usage read from the raw response bodies by genai-prices'
own `extract_usage` (independently of our readers).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price, extract_usage
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_llmcost import names

try:
    from . import replay
except ImportError:
    import replay

FIXTURES = Path(__file__).parent / "fixtures"
NANO = Decimal("1e-9")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def bodies(recording: dict) -> list[dict]:
    return [json.loads(i["response"]["body"]) for i in recording["interactions"]]


def when(timestamp_ns: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ns // 10**9, tz=timezone.utc).replace(
        microsecond=timestamp_ns // 1000 % 1_000_000)


def stored(collector, finished) -> list[dict]:
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    collector.wait_for_rows(len(ids), "SELECT count() AS n FROM llm_spans WHERE has(['" + "','".join(ids) + "'], span_id)")
    rows = collector.query("SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
    by_id = {row["span_id"]: row for row in rows}
    return [by_id[i] for i in ids]


def expected_cost(usage: Usage, model: str, provider: str, span, context: dict | None = None) -> Decimal:
    return calc_price(usage, model, provider_id=provider, genai_request_timestamp=when(span.start_time),
                      price_context=context).total_price


def exact(amount: Decimal) -> Decimal:
    return amount.quantize(NANO, ROUND_HALF_EVEN)


# -- OpenAI: audio tokens ---------------------------------------------------------------------------------------


def test_openai_audio_tokens_are_priced_as_audio(spans, collector):
    rec = fixture("openai/audio_chat.json")
    with replay.ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        for interaction in rec["interactions"]:
            reply = client.chat.completions.create(**interaction["request"]["body"])
            assert reply.choices[0].message.audio.transcript == "Hello there."
        assert server.unmatched == []
    finished = spans.get_finished_spans()
    rows = stored(collector, finished)
    for span, row, body in zip(finished, rows, bodies(rec)):
        usage = extract_usage(body, provider_id="openai", api_flavor="chat").usage
        assert span.attributes[names.INPUT_AUDIO_TOKENS] == usage.input_audio_tokens > 0
        assert span.attributes[names.OUTPUT_AUDIO_TOKENS] == usage.output_audio_tokens > 0
        assert (row["input_audio_tokens"], row["output_audio_tokens"]) == (usage.input_audio_tokens,
                                                                         usage.output_audio_tokens)
        assert row["price_status"] == "priced"
        assert row["cost_usd"] == exact(expected_cost(usage, body["model"], "openai", span))
    audio, preview = rows
    # gpt-audio: audio at its own price, far above text's (priced as text, it would cost a fraction of this)
    as_text = calc_price(Usage(input_tokens=1240, output_tokens=860), "gpt-audio", provider_id="openai",
                         genai_request_timestamp=when(finished[0].start_time)).total_price
    assert audio["cost_usd"] > 4 * as_text
    # gpt-4o-audio-preview: the catalog has no audio price for it, so its audio tokens are priced as text
    assert preview["cost_usd"] == exact(expected_cost(Usage(input_tokens=2300, cache_read_tokens=1024,
                                                            output_tokens=400), "gpt-4o-audio-preview", "openai",
                                                      finished[1]))


# -- OpenAI Responses: web and file search fees, cache writes -----------------------------------------------------


def test_responses_tool_calls_and_cache_writes_are_priced(spans, collector):
    rec = fixture("openai/responses_tools.json")
    [body] = bodies(rec)
    with replay.ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        response = client.responses.create(**rec["interactions"][0]["request"]["body"])
        assert response.output_text == "Refunds take 14 days."
    [span] = spans.get_finished_spans()
    assert span.attributes[names.CACHE_WRITE_TOKENS] == 2048
    assert span.attributes[names.WEB_SEARCH_REQUESTS] == 2
    assert span.attributes[names.FILE_SEARCH_REQUESTS] == 1
    [row] = stored(collector, [span])
    usage = extract_usage(body, provider_id="openai", api_flavor="responses").usage
    assert usage.cache_write_tokens == 2048 == row["cache_write_tokens"]
    tokens_only = expected_cost(usage, "gpt-5-2025-08-07", "openai", span)
    usage.web_searches, usage.storage_searches = 2, 1  # the output items genai-prices' extractor does not count
    with_fees = expected_cost(usage, "gpt-5-2025-08-07", "openai", span)
    assert with_fees - tokens_only == 2 * Decimal(10) / 1000 + Decimal("2.5") / 1000  # $10/1k, $2.50/1k calls
    assert row["cost_usd"] == exact(with_fees)
    assert row["request_fees_usd"] == exact(with_fees - tokens_only)
    parts = ("input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd", "request_fees_usd")
    assert sum(row[p] for p in parts) == row["cost_usd"]


# -- Gemini: image output and audio input by modality ------------------------------------------------------------


@pytest.fixture(scope="module")
def google_tracing(tracing):
    from otel_llmcost.instrumentation.google_genai import GoogleGenAIInstrumentor

    GoogleGenAIInstrumentor().instrument(tracer_provider=tracing[0])
    yield
    GoogleGenAIInstrumentor().uninstrument()


def test_gemini_image_and_audio_tokens_are_priced_by_modality(google_tracing, spans, collector):
    genai = pytest.importorskip("google.genai")
    from google.genai import types as genai_types

    rec = fixture("google_genai/modalities.json")
    with replay.ReplayServer(rec) as server:
        client = genai.Client(api_key="test", http_options=genai_types.HttpOptions(base_url=server.url,
                                                                                   api_version="v1beta"))
        for model in ("gemini-2.5-flash-image", "gemini-2.5-flash"):
            client.models.generate_content(model=model, contents="Draw a lighthouse.")
        assert server.unmatched == []
    finished = spans.get_finished_spans()
    image, audio = stored(collector, finished)
    image_body, audio_body = bodies(rec)
    image_usage = extract_usage(image_body, provider_id="google").usage
    audio_usage = extract_usage(audio_body, provider_id="google").usage
    assert (image["output_image_tokens"], image["output_tokens"]) == (1290, 1300)
    assert image["cost_usd"] == exact(expected_cost(image_usage, "gemini-2.5-flash-image", "google", finished[0]))
    as_text = calc_price(Usage(input_tokens=20, output_tokens=1300), "gemini-2.5-flash-image", provider_id="google",
                         genai_request_timestamp=when(finished[0].start_time)).total_price
    assert image["cost_usd"] > 10 * as_text  # priced as text it was about 8.5% of the bill
    assert audio["input_audio_tokens"] == 3000
    assert finished[1].attributes[names.CACHE_READ_AUDIO_TOKENS] == 2000
    assert audio["cost_usd"] == exact(expected_cost(audio_usage, "gemini-2.5-flash", "google", finished[1]))


# -- Anthropic: the fast speed tier and compaction iterations ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_fast_speed_and_compaction_iterations_are_priced(stream, spans, collector):
    rec = fixture("anthropic/speed_and_compaction.json")  # the reference: the stream fixture has the same usage
    served = fixture("anthropic/speed_and_compaction_stream.json") if stream else rec
    with replay.ReplayServer(served) as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
        fast_request, compaction_request = (i["request"]["body"] for i in rec["interactions"])
        if stream:
            with client.messages.stream(**fast_request) as events:
                events.get_final_message()
            with client.beta.messages.stream(**compaction_request) as events:
                events.get_final_message()
        else:
            client.messages.create(**fast_request)
            client.beta.messages.create(**compaction_request)
        assert server.unmatched == []
    finished = spans.get_finished_spans()
    fast, compacted = stored(collector, finished)
    fast_body, compacted_body = bodies(rec)
    assert finished[0].attributes[names.SPEED] == "fast"
    fast_usage = extract_usage(fast_body, provider_id="anthropic").usage
    fast_cost = expected_cost(fast_usage, "claude-opus-4-8", "anthropic", finished[0], {"speed": "fast"})
    assert fast_cost > expected_cost(fast_usage, "claude-opus-4-8", "anthropic", finished[0])
    assert fast["cost_usd"] == exact(fast_cost)
    assert fast["attributes"][names.SPEED] == "fast"

    top_level = extract_usage(compacted_body, provider_id="anthropic").usage
    [iteration] = [i for i in compacted_body["usage"]["iterations"] if i["type"] == "compaction"]
    compaction = Usage(input_tokens=iteration["input_tokens"] + iteration["cache_read_input_tokens"],
                       cache_read_tokens=iteration["cache_read_input_tokens"], output_tokens=iteration["output_tokens"])
    expected = (expected_cost(top_level, "claude-opus-4-6", "anthropic", finished[1])
                + expected_cost(compaction, "claude-opus-4-6", "anthropic", finished[1]))
    assert compacted["cost_usd"] == exact(expected)
    assert compacted["input_tokens"] == top_level.input_tokens + compaction.input_tokens
    assert compacted["output_tokens"] == 900 + 3100
    assert compacted["attributes"][names.COMPACTION_INPUT_TOKENS] == str(152200)


# -- reprice reads the billed units back ------------------------------------------------------------------------


def test_reprice_prices_the_stored_billed_units_to_the_same_amounts(collector):
    """`otel-llmcost reprice` rebuilds each row's usage from its columns and attributes (audio and image
    columns, compaction counted out of the token columns, the speed tier, tool calls): with the same prices,
    every row of this module comes out unchanged (idempotent, and nothing repriced as text or standard speed)."""
    from otel_llmcost import reprice
    from otel_llmcost.collector.pricing import PriceCatalog

    sql = reprice.READ_SQL.replace("{price_columns}", ", ".join(reprice.PRICE_COLUMNS)).replace(
        "{text_columns}", ", ".join(reprice.TEXT_COLUMNS)).replace("{model_filter}", "")
    records = collector.query(sql, {"lo": 0, "hi": 2**62, "after_ts": -1, "after_trace": "", "after_span": "",
                                    "page": 10_000})
    billed = [r for r in records if r["price_status"] == "priced"]
    assert {r["response_model"] for r in billed} >= {"gpt-audio-2025-08-28", "gpt-5-2025-08-07",
                                                     "gemini-2.5-flash-image", "claude-opus-4-8", "claude-opus-4-6"}
    catalog = PriceCatalog(price_file=None)
    for record in billed:
        new = reprice.new_values(record, catalog)
        assert not reprice.changed(record, new), (record, new)
    # Read without its units, a row would come out changed: the check above can fail.
    stripped = [dict(r, attributes={}, input_audio_tokens=0, output_audio_tokens=0, output_image_tokens=0)
                for r in billed]
    # (except where the unit is priced as its tokens anyway: gpt-4o-audio-preview's audio, and compaction
    # iterations of a model without a long-context tier)
    assert all(reprice.changed(r, reprice.new_values(s, catalog)) for r, s in zip(billed, stripped)
               if r["response_model"] not in ("gpt-4o-audio-preview-2025-06-03", "claude-opus-4-6"))
