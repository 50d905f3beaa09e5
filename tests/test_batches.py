"""Batch and background accounting: each result of an Anthropic Message Batch and of an OpenAI Batch API output
file is one row priced at the batch rate, attributed like the call that fetched it and linked to its batch; a
background response is one row, from the retrieve that found it finished, however often it is polled.

The real SDKs over real HTTP on 127.0.0.1 (`tests/replay.py` serving written fixtures from `tests/fixtures/`,
each says it was written), a real collector over OTLP, the store. Expected costs from genai-prices.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import anthropic
import openai
from genai_prices import Usage, calc_price
from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_llmcost import names
from replay import ReplayServer

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def expected_cost(provider: str, model: str, start_ns: int, usage: dict, batch: bool):
    return calc_price(Usage(**{k: v for k, v in usage.items() if v}), model, provider_id=provider,
                      genai_request_timestamp=datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc),
                      price_context={"processing": "batch"} if batch else None).total_price


def stored(collector, finished, expected: int) -> list[dict]:
    """Exports the spans to the collector (one request, stored in one insert); the rows it stored of them (it
    stores only the LLM calls)."""
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = ", ".join(f"'{s.context.span_id:016x}'" for s in finished)
    collector.wait_for_rows(expected, f"SELECT count() AS n FROM llm_spans WHERE span_id IN ({ids})")
    return collector.query(f"SELECT * FROM llm_spans FINAL WHERE span_id IN ({ids}) ORDER BY span_id")


def start_of(finished, row) -> int:
    (span,) = [s for s in finished if f"{s.context.span_id:016x}" == row["span_id"]]
    return span.start_time


def attributed(project: str):
    return context.attach(baggage.set_baggage(names.PROJECT, project))


def test_anthropic_batch_results_are_one_row_each_at_the_batch_rate(collector, spans):
    recording = fixture("anthropic/message_batch_results.json")
    with ReplayServer(recording) as server:
        for interaction in recording["interactions"]:
            body = interaction["response"]["body"]
            interaction["response"]["body"] = body.replace("https://api.anthropic.com", server.url)
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="x", max_retries=0)
        batch_id = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
        token = attributed("nightly-docs")
        try:
            results = list(client.messages.batches.results(batch_id))

            async def again():
                async_client = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="x", max_retries=0)
                return [line async for line in await async_client.messages.batches.results(batch_id)]

            assert [r.custom_id for r in asyncio.run(again())] == [r.custom_id for r in results]  # fetched twice
        finally:
            context.detach(token)
        assert server.unmatched == []
    finished = spans.get_finished_spans()
    result_spans = [s for s in finished if names.BATCH_CUSTOM_ID in s.attributes]
    assert len(result_spans) == 2  # the succeeded ones, once: not the errored or expired, not the second fetch
    rows = stored(collector, list(finished), 2)
    assert len(rows) == 2
    succeeded = {r.custom_id: r.result.message for r in results if r.result.type == "succeeded"}
    for row in rows:
        message = succeeded[row["attributes"][names.BATCH_CUSTOM_ID]]
        usage = message.usage
        total_input = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == \
            (total_input, usage.cache_read_input_tokens, usage.output_tokens)
        assert row["cost_usd"] == expected_cost("anthropic", message.model, start_of(finished, row), {
            "input_tokens": total_input, "cache_read_tokens": usage.cache_read_input_tokens,
            "output_tokens": usage.output_tokens}, batch=True)
        assert row["price_status"] == "priced" and row["provider"] == "anthropic"
        assert row["attributes"][names.BATCH_ID] == batch_id and row["project"] == "nightly-docs"
        assert row["response_id"] == message.id


def test_openai_batch_output_file_is_one_row_per_result_at_the_batch_rate(collector, spans):
    recording = fixture("openai/batch_output.json")
    with ReplayServer(recording) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        token = attributed("eval-suite")
        try:
            batch = client.batches.retrieve("batch_6f1e2d")
            content = client.files.content(batch.output_file_id).text
            assert client.files.content(batch.output_file_id).text == content  # fetched twice: counted once
        finally:
            context.detach(token)
        assert server.unmatched == []
    lines = [json.loads(line) for line in content.splitlines()]
    billed = {line["custom_id"]: line["response"]["body"] for line in lines if "usage" in line["response"]["body"]}
    assert len(billed) == 2 and len(lines) == 3
    finished = spans.get_finished_spans()
    rows = stored(collector, list(finished), 2)
    assert len(rows) == 2
    for row in rows:
        body = billed[row["attributes"][names.BATCH_CUSTOM_ID]]
        usage = body["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == \
            (usage["prompt_tokens"], cached, usage["completion_tokens"])
        assert row["cost_usd"] == expected_cost("openai", body["model"], start_of(finished, row), {
            "input_tokens": usage["prompt_tokens"], "cache_read_tokens": cached,
            "output_tokens": usage["completion_tokens"]}, batch=True)
        assert row["attributes"][names.BATCH_ID] == "batch_6f1e2d" and row["project"] == "eval-suite"
        assert row["response_id"] == body["id"] and row["price_status"] == "priced"


def test_a_background_response_is_one_row_however_often_polled(collector, spans):
    recording = fixture("openai/background_response.json")
    with ReplayServer(recording) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        response = client.responses.create(model="gpt-4.1-mini", input="Write a long report.", background=True)
        polls = [response.status]
        while response.status in ("queued", "in_progress"):
            response = client.responses.retrieve(response.id)
            polls.append(response.status)
        again = client.responses.retrieve(response.id)  # looked at once more: nothing more to count
        assert server.unmatched == []
    assert polls == ["queued", "queued", "in_progress", "completed"] and again.status == "completed"
    finished = spans.get_finished_spans()
    assert len(finished) == 5
    with_usage = [s for s in finished if names.INPUT_TOKENS in s.attributes]
    assert len(with_usage) == 1
    rows = stored(collector, list(finished), 1)
    assert len(rows) == 1
    (row,) = rows
    usage = response.usage
    cached = usage.input_tokens_details.cached_tokens
    assert (row["response_id"], row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == \
        (response.id, usage.input_tokens, cached, usage.output_tokens)
    assert row["cost_usd"] == expected_cost("openai", response.model, start_of(finished, row), {
        "input_tokens": usage.input_tokens, "cache_read_tokens": cached, "output_tokens": usage.output_tokens},
        batch=False)
    assert row["span_id"] == format(with_usage[0].context.span_id, "016x")
