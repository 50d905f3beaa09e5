"""Pricing: priced spans per second with `PriceCatalog().price(...)`, cold and warm, over a realistic mix.

- warm: one catalog prices the whole mix again and again (model look-ups cached, as in the collector);
- cold: a new `PriceCatalog()` for every span (every look-up misses its cache);
- reference: `genai_prices.calc_price` itself for the same spans (what an uncached collector would pay).
The mix: OpenAI, Anthropic, Google (tiered above 200k input tokens: some spans cross it), Bedrock,
provider-prefixed names, dated snapshots, cache reads and writes (1 h writes too), reasoning, and 3 % of
names no catalog knows (unpriced).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import datetime, timezone

from .common import log, median, spread, table

MIX = [  # (provider, model, weight)
    ("openai", "gpt-4o-mini-2024-07-18", 25),
    ("openai", "gpt-4.1", 10),
    ("openai", "o3-mini", 5),
    ("openai", "openai/gpt-4o", 3),
    ("anthropic", "claude-sonnet-4-5-20250929", 15),  # tiered above 200k input tokens
    ("anthropic", "claude-3-5-haiku-20241022", 8),
    ("anthropic", "claude-opus-4-1", 3),
    ("gcp.gemini", "gemini-2.5-pro", 8),  # tiered above 200k input tokens
    ("gcp.vertex_ai", "gemini-2.5-flash", 6),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0", 4),
    ("mistral_ai", "mistral-large-latest", 3),
    ("groq", "llama-3.3-70b-versatile", 2),
    ("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123", 2),
    ("openai", "our-internal-model-v7", 3),  # unknown: unpriced
    ("anthropic", "claude-next-preview", 3),  # unknown: unpriced
]


def make_spans(n: int, seed: int = 7):
    from otel_llmcost.collector.pricing import PricedUsage

    rng = random.Random(seed)
    weights = [w for *_, w in MIX]
    now = time.time_ns()
    spans = []
    for _ in range(n):
        provider, model, _ = rng.choices(MIX, weights)[0]
        input_tokens = int(rng.lognormvariate(7.5, 1.6)) + 1
        if rng.random() < 0.05:
            input_tokens += 200_000  # long context: the upper tier where there is one
        cache_read = input_tokens // 2 if rng.random() < 0.3 else 0
        cache_write = min(input_tokens - cache_read, 2000) if provider == "anthropic" and rng.random() < 0.2 else 0
        usage = PricedUsage(
            input_tokens=input_tokens, output_tokens=int(rng.lognormvariate(5, 1.2)),
            cache_read_tokens=cache_read, cache_write_tokens=cache_write,
            cache_write_1h_tokens=cache_write // 2 if rng.random() < 0.3 else 0,
            reasoning_tokens=64 if model.startswith("o3") else 0,
        )
        timestamp = now - rng.randint(0, 60 * 86400) * 1_000_000_000
        spans.append((provider, model, timestamp, usage))
    return spans


def run_catalog(spans, cold: bool, warmup=()) -> tuple[float, dict]:
    from otel_llmcost.collector.pricing import PriceCatalog

    statuses: dict[str, int] = {}
    catalog = PriceCatalog()
    for provider, model, ts, usage in warmup:  # warm the look-up cache with other spans of the same models
        catalog.price(provider, model, ts, usage)
    t0 = time.perf_counter()
    for provider, model, ts, usage in spans:
        if cold:
            catalog = PriceCatalog()
        price = catalog.price(provider, model, ts, usage)
        statuses[price.status] = statuses.get(price.status, 0) + 1
    return len(spans) / (time.perf_counter() - t0), statuses


def run_reference(spans) -> float:
    import genai_prices
    from genai_prices import Usage

    from otel_llmcost.collector.pricing import PROVIDER_IDS

    t0 = time.perf_counter()
    for provider, model, ts, usage in spans:
        try:
            genai_prices.calc_price(
                Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                      cache_read_tokens=usage.cache_read_tokens or None,
                      cache_write_tokens=usage.cache_write_tokens or None),
                model, provider_id=PROVIDER_IDS.get(provider),
                genai_request_timestamp=datetime.fromtimestamp(ts / 1e9, tz=timezone.utc))
        except (LookupError, ValueError):
            pass
    return len(spans) / (time.perf_counter() - t0)


def run(rounds: int = 5, quick: bool = False) -> str:
    n_warm, n_cold = (2000, 100) if quick else (50_000, 2_000)
    warm_spans = make_spans(n_warm)
    warmup = make_spans(2000, seed=8)  # same models, other usage and times: nothing priced twice
    cold_spans = warm_spans[:n_cold]
    results = {"warm": [], "cold": [], "reference": []}
    statuses = {}
    for r in range(rounds):
        log(f"pricing round {r + 1}/{rounds}")
        rate, statuses = run_catalog(warm_spans, cold=False, warmup=warmup)
        results["warm"].append(rate)
        results["cold"].append(run_catalog(cold_spans, cold=True)[0])
        results["reference"].append(run_reference(cold_spans))
    rows = []
    labels = {
        "warm": f"warm: one `PriceCatalog`, look-ups cached ({n_warm:,} spans)",
        "cold": f"cold: a new `PriceCatalog()` per span ({n_cold:,} spans)",
        "reference": f"reference: `genai_prices.calc_price` per span ({n_cold:,} spans)",
    }
    for key, rates in results.items():
        rows.append([labels[key], f"{median(rates):,.0f}", f"{1e6 / median(rates):.1f}",
                     f"{min(rates):,.0f}…{max(rates):,.0f}"])
    mix = ", ".join(f"{k} {v / n_warm:.0%}" for k, v in sorted(statuses.items()))
    notes = (f"\n\nOne thread, in-process, {rounds} interleaved rounds (warm, cold, reference). "
             f"Outcome over the mix: {mix}.")
    return table(["pricing", "spans/s (median)", "µs per span", "min…max spans/s"], rows) + notes


if __name__ == "__main__":
    print(run())
