"""The pricing fast path (`fast_pricing.FastPlan`) against its plain reference (`pricing.PublicPlan`, genai-prices'
public `ModelPrice.calc_price`) and against `genai_prices.calc_price` itself, over many usages."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
from genai_prices import Usage, calc_price

from otel_llmcost.collector.fast_pricing import FastPlan
from otel_llmcost.collector.price_overrides import parse_price_file
from otel_llmcost.collector.pricing import USAGE_KEYS, PriceCatalog, PricedUsage, PublicPlan, new_plan

AT = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
MODELS = [
    ("openai", "gpt-4o-mini-2024-07-18", None),
    ("openai", "gpt-5", None), ("openai", "gpt-5", {"service_tier": "flex"}),
    ("openai", "gpt-5", {"service_tier": "priority"}), ("openai", "gpt-5", {"processing": "batch"}),
    ("anthropic", "claude-sonnet-4-5-20250929", None),     # long-context tiers, 5-minute and 1-hour writes
    ("anthropic", "claude-sonnet-4-5-20250929", {"processing": "batch"}),
    ("anthropic", "claude-3-5-sonnet-20240620", None),     # web searches
    ("google", "gemini-2.5-pro", None),                    # tiers above 200k input
    ("perplexity", "sonar-pro", None),                     # a per-request fee
    ("perplexity", "sonar-deep-research", None),           # reasoning tokens priced
    ("openai", "gpt-realtime", None),                      # audio and image tokens, audio cache reads
    ("google", "gemini-2.5-flash-image", None),            # image output
    ("google", "gemini-live-2.5-flash", None),             # image and video input, audio output
    ("deepseek", "deepseek-chat", None),
]


def model_price(provider: str, model: str, context: dict | None):
    return calc_price(Usage(input_tokens=1), model, provider_id=provider, genai_request_timestamp=AT,
                      price_context=context).model_price


def random_usage(rng: random.Random) -> tuple[int, ...]:
    """A usage whose parts fit in their wholes (as providers report them), some fields zero, some huge."""
    scale = rng.choice([10, 1000, 150_000, 199_999, 200_000, 200_001, 272_001, 1_000_000, 10**12])
    inp = rng.randint(0, scale)
    cache_read = rng.choice([0, rng.randint(0, inp)])
    cache_write = rng.choice([0, rng.randint(0, inp - cache_read)])
    cache_write_1h = rng.choice([0, rng.randint(0, cache_write)])
    out = rng.randint(0, scale // rng.choice([1, 10]))
    reasoning = rng.choice([0, rng.randint(0, out)])
    audio_in = rng.choice([0, rng.randint(0, inp - cache_read)])
    cache_audio = rng.choice([0, rng.randint(0, min(cache_read, audio_in + cache_read) // 2)])
    image_in = rng.choice([0, rng.randint(0, inp - cache_read - audio_in)])
    cache_image = rng.choice([0, rng.randint(0, (cache_read - cache_audio) // 2)])
    video_in = rng.choice([0, rng.randint(0, inp - cache_read - audio_in - image_in)])
    audio_out = rng.choice([0, rng.randint(0, out)])
    image_out = rng.choice([0, rng.randint(0, out - audio_out)])
    video_out = rng.choice([0, rng.randint(0, out - audio_out - image_out)])
    web, files = rng.choice([0, 0, rng.randint(1, 20)]), rng.choice([0, 0, rng.randint(1, 5)])
    return (inp, out, cache_read, cache_write, cache_write_1h, reasoning, web, audio_in, cache_audio, audio_out,
            image_in, cache_image, image_out, video_in, video_out, files)


def genai_usage(values: tuple[int, ...]) -> Usage:
    return Usage(**{key: value for key, value in zip(USAGE_KEYS, values) if value})


def test_the_fast_path_prices_every_usage_as_the_reference_and_genai_prices():
    rng = random.Random(25)
    usages = [random_usage(rng) for _ in range(300)] + [
        (0,) * 16, (10**15, 10**15) + (0,) * 14,                           # nothing; huge counts
        (5000, 100, 1000, 2000, 500) + (0,) * 11,                          # 5-minute and 1-hour writes
        (300, 50, 0, 0, 0, 0, 3) + (0,) * 9,                               # web searches
        (100, 10, 200) + (0,) * 13,                                        # cache reads above the input: refused
    ] + [(at, 1000, 1000, 0, 0) + (0,) * 11 for threshold in (128_000, 200_000, 272_000)
         for at in (threshold - 1, threshold, threshold + 1)]                # at each long-context threshold
    checked = refused = 0
    for provider, model, context in MODELS:
        price = model_price(provider, model, context)
        fast, plain = new_plan(price), PublicPlan(price)
        assert isinstance(fast, FastPlan), f"genai-prices {genai_prices.__version__}: the fast path is not used"
        for values in usages + usages:  # twice: the second time from the memo
            ours, reference = fast.price(values, "s", model), plain.price(values, "s", model)
            assert ours == reference, (model, context, values)
            try:
                expected = price.calc_price(genai_usage(values))
            except ValueError as exc:
                assert ours.status == "unpriced" and str(exc) in ours.note, (model, values, ours)
                refused += 1
                continue
            assert ours.total == expected["total_price"], (model, context, values)
            assert ours.input + ours.cache_read + ours.cache_write == expected["input_price"], (model, values)
            assert ours.output == expected["output_price"], (model, context, values)
            checked += 1
    assert checked > 5000 and refused > 0


def test_the_catalog_agrees_with_calc_price_over_tiers_times_and_unknown_models():
    fast = PriceCatalog(price_file=None)
    rng = random.Random(7)
    usages = [PricedUsage(*random_usage(rng)) for _ in range(40)]
    tiers = [None, "default", "flex", "priority", "batch"]
    for (provider, model, _), usage, tier in itertools.product(MODELS[::2], usages, tiers):
        ours = fast.price(provider, model, int(AT.timestamp()) * 10**9, usage, tier)
        context = {"processing": "batch"} if tier == "batch" else ({"service_tier": tier} if tier else None)
        try:
            calc = calc_price(genai_usage(usage.priced_fields()), model, provider_id=provider,
                              genai_request_timestamp=AT, price_context=context)
        except ValueError as exc:
            assert ours.status == "unpriced" and str(exc) in ours.note
            continue
        halved = ours.source.endswith(f"+ {tier} -50%")
        assert ours.total == calc.total_price * (Decimal("0.5") if halved else 1), \
            (model, usage, tier)
    unknown = fast.price("openai", "gpt-99-unreleased", int(AT.timestamp()) * 10**9, PricedUsage(10, 10))
    assert unknown.status == "unpriced" and unknown.total is None


def test_price_file_prices_take_the_fast_path_and_agree():
    price_file = parse_price_file(
        "models:\n"
        "  - {model: house-model, input: 0.3, cache_read: 0.15, cache_write: 0.375, cache_write_1h: 0.6,"
        " output: 1.2, per_request: 0.001}\n"
        "  - {model: local-llama, gpu_hour_usd: 2.5, gpus: 3, tokens_per_second: 1700}\n")
    rng = random.Random(3)
    for custom in price_file.models:
        fast, plain = new_plan(custom.model_price), PublicPlan(custom.model_price)
        for values in [random_usage(rng)[:5] + (0,) * 11 for _ in range(200)]:
            assert fast.price(values, "f", custom.name) == plain.price(values, "f", custom.name), (custom.name, values)
