"""Pricing: every cost component exact against `genai_prices.calc_price` and against the user's price file;
model names that today's tools get wrong; application-level cache hits; the price file in a real collector.
"""

from __future__ import annotations

import itertools
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from genai_prices import types as price_types
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import CollectorProcess
from otel_llmcost import names
from otel_llmcost.collector.price_overrides import PriceFileError, parse_price_file
from otel_llmcost.collector.pricing import PriceCatalog, PricedUsage

VERSION = genai_prices.__version__


def ns(text: str) -> int:
    when = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def when(timestamp_ns: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ns // 10**9, tz=timezone.utc).replace(
        microsecond=timestamp_ns // 1000 % 1_000_000)


def genai_usage(u: PricedUsage) -> Usage:
    fields = dict(input_tokens=u.input_tokens, output_tokens=u.output_tokens, cache_read_tokens=u.cache_read_tokens,
                  cache_write_tokens=u.cache_write_tokens, cache_write_1h_tokens=u.cache_write_1h_tokens,
                  output_reasoning_tokens=u.reasoning_tokens, web_searches=u.web_searches,
                  input_audio_tokens=u.input_audio_tokens, cache_audio_read_tokens=u.cache_audio_read_tokens,
                  output_audio_tokens=u.output_audio_tokens, input_image_tokens=u.input_image_tokens,
                  cache_image_read_tokens=u.cache_image_read_tokens, output_image_tokens=u.output_image_tokens,
                  input_video_tokens=u.input_video_tokens, output_video_tokens=u.output_video_tokens,
                  storage_searches=u.file_searches)
    return Usage(**{k: v for k, v in fields.items() if v})


def reference(provider: str, model: str, timestamp_ns: int, usage: PricedUsage, tier: str | None):
    """What genai-prices says, written out independently of pricing.py: (calculation, our factor)."""
    context = {"processing": "batch"} if tier == "batch" else ({"service_tier": tier} if tier else None)
    calc = calc_price(genai_usage(usage), model, provider_id=provider, genai_request_timestamp=when(timestamp_ns),
                      price_context=context)
    factor = Decimal(1)
    if tier in ("batch", "flex"):
        standard = calc_price(genai_usage(usage), model, provider_id=provider,
                              genai_request_timestamp=when(timestamp_ns))
        if standard.model_price == calc.model_price:  # genai-prices has no price for this tier: our 50% rule
            factor = Decimal("0.5")
    return calc, factor


MODELS = [
    ("openai", "gpt-4o-mini-2024-07-18"),
    ("openai", "gpt-5"),                                   # flex, priority and batch variants
    ("openai", "gpt-4.1-nano-2025-04-14"),
    ("anthropic", "claude-sonnet-4-5-20250929"),           # long-context tiers, 1-hour writes, batch from 2026-10-14
    ("anthropic", "claude-3-5-sonnet-20240620"),           # web searches, no batch variant
    ("google", "gemini-2.5-pro"),
    ("deepseek", "deepseek-chat"),                         # priced by time of day
    ("perplexity", "sonar-pro"),                           # a per-request fee
    ("perplexity", "sonar-deep-research"),                 # a reasoning-token price
    ("aws", "us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("openai", "gpt-realtime"),                            # audio and image input, audio cache reads, audio output
    ("google", "gemini-2.5-flash-image"),                  # image output
    ("google", "gemini-live-2.5-flash"),                   # image and video input, audio output
]
USAGES = [
    PricedUsage(1000, 200),
    PricedUsage(1149, 353, cache_read_tokens=1024),
    PricedUsage(5000, 100, cache_read_tokens=1000, cache_write_tokens=2000, cache_write_1h_tokens=500),
    PricedUsage(250_000, 1000, cache_read_tokens=10_000),  # past the 200k long-context tier
    PricedUsage(11, 228, reasoning_tokens=192),
    PricedUsage(300, 50, web_searches=3),
    PricedUsage(0, 0),
    PricedUsage(4000, 1500, cache_read_tokens=1000, input_audio_tokens=2500, cache_audio_read_tokens=600,
                output_audio_tokens=1200, input_image_tokens=300, cache_image_read_tokens=100, output_image_tokens=200,
                input_video_tokens=400, file_searches=2, web_searches=1),
]
TIMES = ["2025-06-01T00:29:59", "2025-06-01T00:30:00", "2026-10-13T23:59:59.999999", "2026-11-20T12:00:00"]
TIERS = [None, "default", "flex", "priority", "batch"]


def test_every_component_equals_genai_prices_over_a_grid():
    catalog = PriceCatalog(price_file=None)
    checked = halved = 0
    for (provider, model), usage, at, tier, _round in itertools.product(MODELS, USAGES, TIMES, TIERS, range(2)):
        timestamp = ns(at)
        ours = catalog.price(provider, model, timestamp, usage, tier)
        try:
            calc, factor = reference(provider, model, timestamp, usage, tier)
        except ValueError as exc:
            assert ours.status == "unpriced" and str(exc) in ours.note, (model, usage, ours)
            continue
        case = (provider, model, usage, at, tier)
        assert ours.status == "priced", case
        assert ours.total == calc.total_price * factor, case
        assert ours.input + ours.cache_read + ours.cache_write == calc.input_price * factor, case
        assert ours.output == calc.output_price * factor, case
        assert ours.model_id == calc.model.id, case
        expected_source = f"genai-prices {VERSION}" + (f" + {tier} -50%" if factor != 1 else "")
        assert ours.source == expected_source, case
        checked += 1
        halved += factor != 1
    assert checked > 1000 and halved > 0


def test_the_parts_are_the_priced_units():
    """Uncached input, cache reads, 5-minute and 1-hour writes and output, each at its own price."""
    catalog = PriceCatalog(price_file=None)
    usage = PricedUsage(5000, 100, cache_read_tokens=1000, cache_write_tokens=2000, cache_write_1h_tokens=500)
    price = catalog.price("anthropic", "claude-sonnet-4-5-20250929", ns("2026-11-20T12:00:00"), usage)
    mp = calc_price(Usage(input_tokens=1), "claude-sonnet-4-5", provider_id="anthropic",
                    genai_request_timestamp=when(ns("2026-11-20T12:00:00"))).model_price
    base = lambda p: p.base if isinstance(p, price_types.TieredPrices) else p  # noqa: E731 (under the tier)
    m = Decimal(1_000_000)
    assert price.input == 2000 * base(mp.input_mtok) / m
    assert price.cache_read == 1000 * base(mp.cache_read_mtok) / m
    assert price.cache_write == (1500 * base(mp.cache_write_mtok) + 500 * base(mp.cache_write_1h_mtok)) / m
    assert price.output == 100 * base(mp.output_mtok) / m
    assert price.cache_savings == 1000 * (base(mp.input_mtok) - base(mp.cache_read_mtok)) / m


def test_a_warm_look_up_does_not_ask_genai_prices_again(monkeypatch):
    """The cache is real: once a model's prices and a usage pattern are resolved, new usages of that pattern
    are priced without genai-prices' matching, price selection or leaf computation."""
    catalog = PriceCatalog(price_file=None)
    at = ns("2026-11-20T12:00:00")
    first = catalog.price("openai", "gpt-4o-mini-2024-07-18", at, PricedUsage(1149, 353, cache_read_tokens=1024))

    def forbidden(*args, **kwargs):
        raise AssertionError("genai-prices was asked again")

    monkeypatch.setattr(catalog.snapshot, "find_provider_model", forbidden)
    from otel_llmcost.collector import fast_pricing

    monkeypatch.setattr(fast_pricing, "compute_leaf_values", forbidden)
    monkeypatch.setattr(price_types.ModelInfo, "get_prices", forbidden)
    second = catalog.price("openai", "gpt-4o-mini-2024-07-18", at + 10**9, PricedUsage(2000, 10, cache_read_tokens=512))
    monkeypatch.undo()
    assert second.total == calc_price(Usage(input_tokens=2000, output_tokens=10, cache_read_tokens=512),
                                      "gpt-4o-mini-2024-07-18", provider_id="openai",
                                      genai_request_timestamp=when(at)).total_price
    assert first.total != second.total


@pytest.mark.parametrize("provider, model, priced_as, note", [
    ("openai", "openai/gpt-4o", "gpt-4o", ""),
    ("", "anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku-latest", ""),
    ("gcp.gemini", "models/gemini-2.5-pro", "gemini-2.5-pro", ""),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o", ""),
    ("openai", "ft:gpt-4o-mini-2024-07-18:acme::B1x2y3", "ft:gpt-4o-mini", ""),  # genai-prices has the fine-tune
    ("openai", "ft:gpt-4.1-nano-2025-04-14:acme::C9", "gpt-4.1-nano", "priced at its base model"),
    ("aws.bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", "regional.anthropic.claude-3-5-sonnet-20240620-v1:0", ""),
    ("", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "regional.anthropic.claude-sonnet-4-5-20250929-v1:0", ""),
    ("anthropic", "eu.anthropic.claude-3-haiku-20240307-v1:0", "regional.anthropic.claude-3-haiku-20240307-v1:0", ""),
])
def test_model_names_today_s_tools_get_wrong_are_priced(provider, model, priced_as, note):
    price = PriceCatalog(price_file=None).price(provider, model, ns("2026-11-20T12:00:00"), PricedUsage(1000, 100))
    assert price.status == "priced" and price.total > 0
    assert price.model_id == priced_as
    assert note in price.note


@pytest.mark.parametrize("model", ["gpt-9-turbo", "gpt-4o-2099-01-01", "claude-zeta-7", "my-finetune-xyz"])
def test_brand_new_models_are_unpriced_never_zero(model):
    price = PriceCatalog(price_file=None).price("openai", model, ns("2026-11-20T12:00:00"), PricedUsage(1000, 100))
    assert price.status == "unpriced" and price.total is None
    assert model in price.note


def test_service_tier_rules_are_named_in_the_row():
    catalog = PriceCatalog(price_file=None)
    usage = PricedUsage(10_000, 1000)
    at = ns("2025-06-01T12:00:00")  # before genai-prices' batch prices for Claude: our rule
    standard = catalog.price("anthropic", "claude-3-5-sonnet-20240620", at, usage)
    batch = catalog.price("anthropic", "claude-3-5-sonnet-20240620", at, usage, "batch")
    assert batch.total == standard.total / 2
    assert batch.source == f"genai-prices {VERSION} + batch -50%" and "50%" in batch.note
    now = ns("2026-11-20T12:00:00")
    priority = catalog.price("openai", "gpt-5", now, usage, "priority")
    assert priority.total > catalog.price("openai", "gpt-5", now, usage).total  # genai-prices' surcharge
    assert priority.note == ""
    unknown = catalog.price("openai", "gpt-4o-mini", at, usage, "scale")
    assert unknown.total == catalog.price("openai", "gpt-4o-mini", at, usage).total
    assert "no price for this tier" in unknown.note


# -- the user's price file ----------------------------------------------------------------------------------

PRICE_FILE = """
models:
  - model: "ft:gpt-4o-mini-2024-07-18:acme::*"
    provider: openai
    input: 0.30
    cache_read: 0.15
    output: 1.20
  - model: acme-llm-v2
    input: 1.00
    cache_read: 0.10
    cache_write: 1.25
    cache_write_1h: 2.00
    output: 4.00
    per_request: 0.002
  - model: acme-llm-v2
    input: 0.80
    cache_read: 0.08
    cache_write: 1.00
    output: 3.20
    from: 2026-01-01
  - model: llama-3.1-70b-local
    gpu_hour_usd: 2.50
    gpus: 2
    input_tokens_per_second: 6000
    output_tokens_per_second: 900
discounts:
  - provider: anthropic
    percent: 15
    from: 2026-01-01
  - model: "gpt-4o*"
    percent: 10
"""


@pytest.fixture
def price_file(tmp_path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICE_FILE)
    return path


def test_custom_prices_per_mtok_with_effective_dates(price_file):
    catalog = PriceCatalog(price_file)
    source = f"prices.yaml sha256:{parse_price_file(PRICE_FILE).digest[:8]}"
    usage = PricedUsage(5000, 700, cache_read_tokens=1000, cache_write_tokens=2000, cache_write_1h_tokens=500)
    m = Decimal(1_000_000)
    old = catalog.price("", "acme-llm-v2", ns("2025-12-31T23:59:59"), usage)
    assert (old.status, old.source, old.model_id) == ("priced", source, "acme-llm-v2")
    assert old.input == 2000 * Decimal("1.00") / m
    assert old.cache_read == 1000 * Decimal("0.10") / m
    assert old.cache_write == (1500 * Decimal("1.25") + 500 * Decimal("2.00")) / m
    assert old.output == 700 * Decimal("4.00") / m
    assert old.total == old.input + old.cache_read + old.cache_write + old.output + Decimal("0.002")
    new = catalog.price("", "acme-llm-v2", ns("2026-01-01T00:00:00"), usage)
    # No 1-hour price from 2026 on: those writes are priced as cache writes, as genai-prices does.
    assert new.cache_write == 2000 * Decimal("1.00") / m
    assert new.total == (2000 * Decimal("0.80") + 1000 * Decimal("0.08") + 2000 * Decimal("1.00")
                         + 700 * Decimal("3.20")) / m


def test_a_fine_tune_named_in_the_price_file_uses_its_price(price_file):
    catalog = PriceCatalog(price_file)
    price = catalog.price("openai", "ft:gpt-4o-mini-2024-07-18:acme::B1x2y3", ns("2026-11-20T12:00:00"),
                          PricedUsage(1149, 353, cache_read_tokens=1024))
    m = Decimal(1_000_000)
    assert price.total == (125 * Decimal("0.30") + 1024 * Decimal("0.15") + 353 * Decimal("1.20")) / m
    assert price.model_id == "ft:gpt-4o-mini-2024-07-18:acme::*"


def test_self_hosted_model_priced_from_gpu_hours_and_throughput(price_file):
    price = PriceCatalog(price_file).price("vllm", "llama-3.1-70b-local", ns("2026-11-20T12:00:00"),
                                           PricedUsage(12_000, 900))
    per_hour = Decimal("2.50") * 2
    assert price.input == 12_000 * (per_hour / 3600 / 6000 * 1_000_000) / 1_000_000
    assert price.output == 900 * (per_hour / 3600 / 900 * 1_000_000) / 1_000_000
    # 900 output tokens take one second of the two GPUs: $5/3600.
    assert abs(price.output - per_hour / 3600) < Decimal("1e-20")
    assert "self-hosted" in price.note


def test_negotiated_discounts_by_provider_and_model_from_a_date(price_file):
    plain = PriceCatalog(price_file=None)
    catalog = PriceCatalog(price_file)
    digest = parse_price_file(PRICE_FILE).digest[:8]
    usage = PricedUsage(5000, 700, cache_read_tokens=1000)
    for at, expected_factor in (("2025-12-31T12:00:00", Decimal(1)), ("2026-01-01T00:00:00", Decimal("0.85"))):
        ours = catalog.price("anthropic", "claude-sonnet-4-5-20250929", ns(at), usage)
        list_price = plain.price("anthropic", "claude-sonnet-4-5-20250929", ns(at), usage)
        assert ours.total == list_price.total * expected_factor
        assert ours.cache_savings == list_price.cache_savings * expected_factor
        if expected_factor != 1:
            assert ours.source == f"genai-prices {VERSION} + prices.yaml sha256:{digest} -15%"
    by_model = catalog.price("openai", "gpt-4o-2024-08-06", ns("2025-06-01T00:00:00"), usage)
    assert by_model.total == plain.price("openai", "gpt-4o-2024-08-06", ns("2025-06-01T00:00:00"), usage).total \
        * Decimal("0.9")
    untouched = catalog.price("openai", "gpt-5", ns("2026-06-01T00:00:00"), usage)
    assert untouched.source == f"genai-prices {VERSION}"


@pytest.mark.parametrize("text, problem", [
    ("models:\n  - model: x\n    input: 1\n", "output"),
    ("models:\n  - model: x\n    input: -1\n    output: 1\n", "zero or more"),
    ("models:\n  - model: x\n    input: 1\n    outptu: 1\n", "unknown keys"),
    ("models:\n  - model: x\n    gpu_hour_usd: 2\n", "tokens_per_second"),
    ("discounts:\n  - percent: 10\n", "provider"),
    ("discounts:\n  - provider: openai\n    percent: 150\n", "at most 100"),
    ("models:\n  - model: x\n    input: 1\n    output: 1\n    from: someday\n", "not a date"),
    ("prices: []\n", "unknown top-level"),
])
def test_a_bad_price_file_is_refused_naming_the_problem(text, problem):
    with pytest.raises(PriceFileError, match=problem):
        parse_price_file(text, "prices.yaml")


# -- in a real collector: application-level cache hits and the price file -----------------------------------


@pytest.fixture(scope="module")
def priced_collector(tmp_path_factory):
    directory = tmp_path_factory.mktemp("priced")
    (directory / "prices.yaml").write_text(PRICE_FILE)
    process = CollectorProcess(directory / "llmcost", {"OTEL_LLMCOST_PRICES": str(directory / "prices.yaml")}).start()
    yield process
    process.stop()


def emit(collector, spans: list[dict]) -> list[str]:
    """Spans with the given attributes and start times, through a real tracer and the OTLP/HTTP exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "pricing-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    for spec in spans:
        start = spec.get("start", time.time_ns())
        span = tracer.start_span(spec.get("name", "span"), start_time=start, attributes=spec["attributes"])
        span.end(end_time=start + 1_000_000)
    finished = exporter.get_finished_spans()
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    collector.wait_for_rows(len(ids), "SELECT count() AS n FROM llm_spans WHERE has(['" + "','".join(ids) + "'], span_id)")
    return ids


def test_application_cache_hits_are_stored_with_their_savings(priced_collector):
    """A span from `otel_llmcost.record_cache_hit` (no gen_ai.usage.*, no operation) is kept: zero tokens and a
    cost of exactly 0, and what the avoided call would have cost as app_cache_savings_usd; the rollup counts it."""
    start = (time.time_ns() // 60_000_000_000 - 30) * 60_000_000_000  # a whole minute, half an hour ago
    hit = {names.CACHE_HIT_KIND: "semantic", names.PROVIDER: "openai", names.REQUEST_MODEL: "gpt-5",
           names.CACHE_HIT_INPUT_TOKENS: 1200, names.CACHE_HIT_OUTPUT_TOKENS: 300, names.FEATURE: "faq"}
    unknown = dict(hit, **{names.REQUEST_MODEL: "acme-unknown-9", names.CACHE_HIT_KIND: "exact"})
    ids = emit(priced_collector, [{"name": "llm cache hit", "attributes": hit, "start": start},
                                  {"name": "llm cache hit", "attributes": unknown, "start": start + 10**9}])
    rows = priced_collector.query("SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) "
                                  "ORDER BY timestamp", {"ids": ids})
    priced, unpriced = rows
    expected = calc_price(Usage(input_tokens=1200, output_tokens=300), "gpt-5", provider_id="openai",
                          genai_request_timestamp=when(start)).total_price
    assert priced["cache_hit_kind"] == "semantic"
    assert (priced["input_tokens"], priced["output_tokens"], priced["cost_usd"]) == (0, 0, Decimal(0))
    assert priced["app_cache_savings_usd"] == expected.quantize(Decimal("1e-9"), "ROUND_HALF_EVEN")
    assert priced["price_status"] == "priced" and "no call made" in priced["price_note"]
    assert unpriced["cache_hit_kind"] == "exact" and unpriced["app_cache_savings_usd"] is None
    assert "acme-unknown-9" in unpriced["price_note"] and unpriced["cost_usd"] == 0
    [rollup] = priced_collector.query(
        "SELECT sum(calls) AS calls, sum(app_cache_hits) AS hits, sum(app_cache_savings_usd) AS saved "
        "FROM llm_rollup_1m WHERE feature = 'faq' AND minute = toStartOfMinute(fromUnixTimestamp64Nano({s:Int64}))",
        {"s": start})
    assert (rollup["calls"], rollup["hits"]) == (0, 2)
    assert rollup["saved"] == expected.quantize(Decimal("1e-9"), "ROUND_HALF_EVEN")


def test_the_collector_prices_with_the_price_file(priced_collector):
    digest = parse_price_file(PRICE_FILE).digest[:8]
    start = time.time_ns()
    ids = emit(priced_collector, [
        {"attributes": {names.OPERATION: "chat", names.PROVIDER: "openai", names.REQUEST_MODEL: "gpt-4o-mini",
                        names.RESPONSE_MODEL: "ft:gpt-4o-mini-2024-07-18:acme::B1x2y3", names.INPUT_TOKENS: 1149,
                        names.OUTPUT_TOKENS: 353, names.CACHE_READ_TOKENS: 1024}, "start": start},
        {"attributes": {names.OPERATION: "chat", names.PROVIDER: "anthropic",
                        names.RESPONSE_MODEL: "claude-sonnet-4-5-20250929", names.INPUT_TOKENS: 5000,
                        names.OUTPUT_TOKENS: 700}, "start": start + 1000},
        {"attributes": {names.OPERATION: "chat", names.PROVIDER: "openai", names.REQUEST_MODEL: "gpt-7-preview",
                        names.INPUT_TOKENS: 10, names.OUTPUT_TOKENS: 1}, "start": start + 2000},
    ])
    fine_tune, claude, unknown = priced_collector.query(
        "SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) ORDER BY timestamp", {"ids": ids})
    m = Decimal(1_000_000)
    assert fine_tune["cost_usd"] == (125 * Decimal("0.30") + 1024 * Decimal("0.15") + 353 * Decimal("1.20")) / m
    assert fine_tune["price_source"] == f"prices.yaml sha256:{digest}"
    list_price = calc_price(Usage(input_tokens=5000, output_tokens=700), "claude-sonnet-4-5-20250929",
                            provider_id="anthropic", genai_request_timestamp=when(start + 1000)).total_price
    assert claude["cost_usd"] == (list_price * Decimal("0.85")).quantize(Decimal("1e-9"), "ROUND_HALF_EVEN")
    assert claude["price_source"] == f"genai-prices {VERSION} + prices.yaml sha256:{digest} -15%"
    assert "negotiated discount 15%" in claude["price_note"]
    assert unknown["price_status"] == "unpriced" and unknown["cost_usd"] is None
    assert "gpt-7-preview" in unknown["price_note"]


def test_the_example_price_file_is_valid():
    from otel_llmcost.collector.price_overrides import load_price_file

    example = load_price_file(Path(__file__).resolve().parents[1] / "collector" / "prices.example.yaml")
    assert len(example.models) == 5 and len(example.discounts) == 2
    price = PriceCatalog(example).price("vllm", "llama-3.1-70b-local", ns("2026-11-20T12:00:00"),
                                        PricedUsage(6000 * 3600, 0))
    assert price.total == Decimal("5.00")  # an hour of both GPUs' input throughput costs the GPU hour
    local = PriceCatalog(example).price("ollama", "deepseek-r1:8b", ns("2026-11-20T12:00:00"), PricedUsage(2000 * 3600, 0))
    assert (local.total.quantize(Decimal("1e-9")), local.source) == (Decimal("0.80"), example.source)  # as stored
    unnamed = PriceCatalog(example).price("vllm", "mistral-large-latest", ns("2026-11-20T12:00:00"), PricedUsage(10, 1))
    assert unnamed.status == "unpriced" and "self-hosted model 'mistral-large-latest'" in unnamed.note


# -- spellings of older instrumentations, through the real OTLP encoding -------------------------------------


def calls_of(scope: str, attributes: dict) -> list:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from otel_llmcost.collector.otlp_lite import calls_in

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer(scope).start_span("chat", attributes=attributes).end()
    return list(calls_in(encode_spans(exporter.get_finished_spans())))


@pytest.mark.parametrize("scope, attributes, expected", [
    # deprecated GenAI names (gen_ai.system, prompt/completion tokens)
    ("old", {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": 1149,
             "gen_ai.usage.completion_tokens": 353}, ("openai", "gpt-4o", 1149, 353, 0, 0, 0)),
    # older OpenLLMetry: llm.usage.*, cache spelled with underscores
    ("opentelemetry.instrumentation.anthropic",
     {"gen_ai.system": "Anthropic", "llm.request.model": "claude-3-5-sonnet-20240620", "llm.usage.prompt_tokens": 1167,
      "llm.usage.completion_tokens": 187, "gen_ai.usage.cache_creation_input_tokens": 1163,
      "gen_ai.usage.cache_read_input_tokens": 0}, ("anthropic", "claude-3-5-sonnet-20240620", 1167, 187, 0, 1163, 0)),
    # OpenLIT's Anthropic spans: raw input (cache excluded), even when the input exceeds the cache
    ("openlit.instrumentation.anthropic",
     {"gen_ai.provider.name": "anthropic", "gen_ai.response.model": "claude-3-5-sonnet-20240620",
      "gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 1163},
     ("anthropic", "claude-3-5-sonnet-20240620", 6163, 10, 1163, 0, 0)),
    # OpenInference
    ("openinference.instrumentation.openai",
     {"llm.system": "openai", "llm.model_name": "o3-mini", "llm.token_count.prompt": 11,
      "llm.token_count.completion": 228, "llm.token_count.completion_details.reasoning": 192},
     ("openai", "o3-mini", 11, 228, 0, 0, 192)),
])
def test_older_and_peer_spellings_are_read(scope, attributes, expected):
    [call] = calls_of(scope, attributes)
    u = call.usage
    assert (call.provider, call.model, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            u.reasoning_tokens) == expected
    assert PriceCatalog(price_file=None).price(call.provider, call.model, ns("2026-11-20T12:00:00"), u).status == "priced"


def test_record_cache_hit_spans_are_priced_as_savings(priced_collector, spans):
    """The real application API, `otel_llmcost.record_cache_hit`, through the instrumentors' tracer provider."""
    import otel_llmcost

    with otel_llmcost.attributes(feature="cached-answers"):
        otel_llmcost.record_cache_hit(kind="exact", provider="anthropic", model="claude-3-5-haiku-20241022",
                                      input_tokens=2000, output_tokens=150)
    finished = spans.get_finished_spans()
    assert len(finished) == 1
    assert HttpExporter(endpoint=priced_collector.http_endpoint + "/v1/traces").export(finished) == \
        SpanExportResult.SUCCESS
    span_id = format(finished[0].context.span_id, "016x")
    priced_collector.wait_for_rows(1, f"SELECT count() AS n FROM llm_spans WHERE span_id = '{span_id}'")
    [row] = priced_collector.query("SELECT * FROM llm_spans FINAL WHERE span_id = {s:String}", {"s": span_id})
    list_price = calc_price(Usage(input_tokens=2000, output_tokens=150), "claude-3-5-haiku-20241022",
                            provider_id="anthropic", genai_request_timestamp=when(finished[0].start_time)).total_price
    assert (row["cache_hit_kind"], row["feature"], row["input_tokens"], row["cost_usd"]) == \
        ("exact", "cached-answers", 0, Decimal(0))
    # The price file's 15% Anthropic discount applies to what was saved, too.
    assert row["app_cache_savings_usd"] == (list_price * Decimal("0.85")).quantize(Decimal("1e-9"), "ROUND_HALF_EVEN")


# -- the hot path's decoder: encoded attributes, decoded once and then looked up ------------------------------


def test_encoded_attribute_decoder_reads_every_value_kind_as_the_message_does():
    """`calls_in` reads spans through a lighter schema with each attribute kept encoded and decoded once
    (then looked up): every value kind, odd counts, a repeated key (the last wins), a message or its bytes,
    first decode or look-up, all give the calls `attributes_of`/`facts_of` give."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

    from otel_llmcost.collector import normalize, otlp_lite

    def kv(key, **value):
        return KeyValue(key=key, value=AnyValue(**value))

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([kv("service.name", string_value="svc"), kv("n", int_value=0)])
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "some.instrumentation"
    cases = [
        [kv("gen_ai.usage.input_tokens", int_value=0), kv("gen_ai.usage.output_tokens", string_value="")],
        [kv("gen_ai.usage.input_tokens", int_value=-5), kv("gen_ai.usage.output_tokens", double_value=3.5),
         kv("gen_ai.request.model", string_value="gpt-4o")],
        [kv("gen_ai.usage.input_tokens", bool_value=True), kv("gen_ai.provider.name", string_value="OpenAI")],
        [kv("gen_ai.usage.input_tokens", string_value="12"), kv("gen_ai.request.model", string_value="m"),
         kv("x.list", array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="a")])),
         kv("x.map", kvlist_value=KeyValueList(values=[kv("a", int_value=1)])), kv("x.bytes", bytes_value=b"\1")],
        [kv("gen_ai.usage.input_tokens", int_value=10), kv("gen_ai.usage.input_tokens", int_value=20)],
        [kv("gen_ai.usage.input_tokens", int_value=10), kv("gen_ai.request.model", string_value="m"),
         kv("gen_ai.request.model")],
        [kv("gen_ai.usage.prompt_tokens", int_value=7), kv("gen_ai.usage.input_tokens", int_value=9),
         kv("llmcost.prefix_length", string_value="abc"), kv("x.flag", bool_value=False), kv("x.d", double_value=0.0)],
        [kv("llmcost.cache_hit.kind", string_value="semantic"), kv("llmcost.cache_hit.input_tokens", int_value=100),
         kv("gen_ai.request.model", string_value="gpt-4o")],
        # a repeated key whose last value is empty: a less specific spelling's value is the one read
        [kv("gen_ai.usage.input_tokens", int_value=5), kv("gen_ai.usage.prompt_tokens", int_value=7),
         kv("x.other", string_value="a"), kv("gen_ai.usage.input_tokens"), kv("x.other", string_value="b")],
    ]
    for i, attributes in enumerate(cases):
        span = scope_spans.spans.add(trace_id=bytes(range(1, 17)), span_id=bytes([1, 2, 3, 4, 5, 6, 7, i + 1]),
                                     name=f"span {i}", start_time_unix_nano=10**18, end_time_unix_nano=10**18 + 5)
        span.attributes.extend(attributes)

    def expected(span, resource_text):
        facts, names_usage, names_cache_hit, rest = normalize.facts_of(normalize.attributes_of(span.attributes))
        if not normalize.is_llm_call(facts, names_usage, names_cache_hit):
            return None
        return normalize.to_call(span, facts, names_usage, rest, "svc", "some.instrumentation", resource_text)

    resource_text = {key: normalize.as_text(value) for key, value in
                     normalize.attributes_of(resource_spans.resource.attributes).items()}
    want = [c for c in (expected(span, resource_text) for span in scope_spans.spans) if c is not None]
    assert len(want) == len(cases)
    for source in (request, request.SerializeToString(), request):  # first decode, then look-ups
        assert list(otlp_lite.calls_in(source)) == want
    assert want[-1].usage.input_tokens == 7 and want[-1].attributes == {"x.other": "b"}


# -- the fast path's fallback to genai-prices' public API ---------------------------------------------------


def test_the_public_api_fallback_prices_exactly_the_same(monkeypatch):
    from otel_llmcost.collector import pricing

    fast = PriceCatalog(price_file=None)
    # As if genai-prices had dropped a function the fast path imports: importing it fails.
    monkeypatch.setitem(sys.modules, "otel_llmcost.collector.fast_pricing", None)
    public = PriceCatalog(price_file=None)
    checked = 0
    for (provider, model), usage, tier in itertools.product(MODELS, USAGES, [None, "flex", "batch"]):
        at = ns("2026-11-20T12:00:00")
        ours, fallback = fast.price(provider, model, at, usage, tier), public.price(provider, model, at, usage, tier)
        assert isinstance(next(iter(public._plans.values())), pricing.PublicPlan)
        assert ours == fallback, (provider, model, usage, tier)
        checked += ours.status == "priced"
    assert checked > 100
    compacted = PricedUsage(2000, 100, compaction_input_tokens=150_000, compaction_output_tokens=3000)
    assert fast.price("perplexity", "sonar-pro", ns("2026-11-20T12:00:00"), compacted) == \
        public.price("perplexity", "sonar-pro", ns("2026-11-20T12:00:00"), compacted)  # one per-request fee, not two
    plain = fast.price("perplexity", "sonar-pro", ns("2026-11-20T12:00:00"), PricedUsage(2000, 100))
    assert fast.price("perplexity", "sonar-pro", ns("2026-11-20T12:00:00"), compacted).fees == plain.fees > 0
