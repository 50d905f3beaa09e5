"""Spans made by the other instrumentations, priced by a real collector.

Each peer runs for real, in its own cached venv (tests/peer_venvs.py: `.venv-peers/<peer>`, the same openai and
anthropic versions as ours), around the real SDKs talking to `tests/replay.py`'s server (recorded provider
traffic), and exports its spans with the real OTLP/HTTP exporter to the collector process of this module.
The tokens and costs stored must be what the provider billed (`genai_prices.calc_price` over the recorded usage,
at the span's start time, with the recorded service tier), except where the peer itself drops a fact: each
such loss is named in the peer's test (what we store, and why it differs).

What the peers say about the same calls (checked with these versions, November 2026):
- OpenLLMetry 0.62.4: everything: Anthropic input already includes cache reads and writes (spelled
  `gen_ai.usage.cache_read.input_tokens` / `gen_ai.usage.cache_creation.input_tokens`), reasoning as
  `gen_ai.usage.reasoning_tokens`, the service tier as `openai.response.service_tier`.
- OpenInference (openai 0.1.66, anthropic 3.1.0): `llm.token_count.*` (Anthropic prompt count includes the cache),
  `llm.model_name`, `llm.provider` (Anthropic) or only `llm.system` (OpenAI); no service tier.
- OpenLIT 1.45.0: Anthropic's raw `input_tokens` (cache excluded) next to the cache counts; no reasoning tokens;
  `gen_ai.usage.cost` = 0 when its price list cannot be fetched (ignored: we price ourselves).
- official contrib openai-v2 2.4b0: no cached tokens and no reasoning tokens.
- anthropic 2.x native spans: input includes the cache; cache writes spelled `gen_ai.usage.cache_write.input_tokens`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

import peer_venvs
from replay import ReplayServer, expected_usage, load

HERE = Path(__file__).resolve().parent
ANTHROPIC_CACHING = "anthropic/test_prompt_caching/test_anthropic_prompt_caching_legacy"
OPENAI_CACHING = "openai/test_prompt_caching/test_openai_prompt_caching"
OPENAI_REASONING = "openai/test_chat/test_chat_reasoning"
OPENAI_PRIORITY = "openai/test_chat/test_chat_with_service_tier"
NANO = Decimal("1e-9")


def body_of(interaction: dict) -> dict:
    body = interaction["request"]["body"]
    return json.loads(body) if isinstance(body, (str, bytes)) else body


def truth(recording: str) -> list[dict]:
    """What the provider billed for each interaction: tokens as the conventions count them, and the tier."""
    out = []
    for expected, interaction in zip(expected_usage(recording), load(recording)["interactions"]):
        usage = expected["usage"]
        response = interaction["response"]["body"]
        response = json.loads(response) if isinstance(response, (str, bytes)) else response
        if "prompt_tokens" in usage:  # OpenAI: prompt_tokens includes the cached tokens
            details = usage.get("prompt_tokens_details") or {}
            out.append({"model": expected["model"], "provider": "openai", "input": usage["prompt_tokens"],
                        "cache_read": details.get("cached_tokens") or 0, "cache_write": 0,
                        "output": usage["completion_tokens"],
                        "reasoning": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
                        "tier": response.get("service_tier") or ""})
        else:  # Anthropic: input_tokens excludes cache reads and writes
            read, write = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
            out.append({"model": expected["model"], "provider": "anthropic",
                        "input": usage["input_tokens"] + read + write, "cache_read": read, "cache_write": write,
                        "output": usage["output_tokens"], "reasoning": 0,
                        "tier": (usage.get("service_tier") or "")})
    return out


# What each peer is run on: one worker process per peer, for all of its recordings (a process start with the
# peer's imports costs seconds).
PEER_RECORDINGS = {
    "openllmetry": [ANTHROPIC_CACHING, OPENAI_CACHING, OPENAI_REASONING, OPENAI_PRIORITY],
    "openinference": [ANTHROPIC_CACHING, OPENAI_CACHING, OPENAI_REASONING, OPENAI_PRIORITY],
    "openlit": [ANTHROPIC_CACHING, OPENAI_CACHING, OPENAI_REASONING],
    "contrib": [OPENAI_CACHING, OPENAI_REASONING, OPENAI_PRIORITY],
    "native": [ANTHROPIC_CACHING],
}
_runs: dict[tuple[str, str], dict[str, list[dict]]] = {}


def run_peer(peer: str, recording: str, collector) -> list[dict]:
    """The peer's spans (as the worker saw them) for every interaction of the recording, exported to the collector."""
    key = (peer, collector.http_endpoint)
    if key not in _runs:
        _runs[key] = _run_all(peer, collector)
    return _runs[key][recording]


def _run_all(peer: str, collector) -> dict[str, list[dict]]:
    if peer == "native":
        python = Path(sys.executable)  # the project's venv has anthropic 2.x and the exporter
    else:
        python, why = peer_venvs.ensure(peer)
        if python is None:
            pytest.skip(f"{peer_venvs.PEERS[peer]['label']} cannot be installed here: {why}")
    servers = [ReplayServer(r).start() for r in PEER_RECORDINGS[peer]]
    try:
        calls, owners = [], []
        for recording, server in zip(PEER_RECORDINGS[peer], servers):
            sdk = "openai" if recording.startswith("openai/") else "anthropic"
            base_url = server.openai_base_url if sdk == "openai" else server.anthropic_base_url
            for interaction in server.interactions:
                calls.append({"sdk": sdk, "base_url": base_url, "body": body_of(interaction)})
                owners.append(recording)
        job = {"peer": peer, "endpoint": collector.http_endpoint + "/v1/traces", "calls": calls}
        done = subprocess.run([str(python), str(HERE / "peer_worker.py")], input=json.dumps(job), capture_output=True,
                              text=True, timeout=180)
    finally:
        for server in servers:
            server.stop()
    assert done.returncode == 0, done.stderr[-4000:]
    spans = [s for s in json.loads(done.stdout) if any(k.startswith(("gen_ai.usage", "llm.token_count"))
                                                       for k in s["attributes"])]
    assert len(spans) == len(calls), json.dumps(spans)[:2000]  # one span with usage per call, in call order
    by_recording: dict[str, list[dict]] = {r: [] for r in PEER_RECORDINGS[peer]}
    for owner, span in zip(owners, spans):
        by_recording[owner].append(span)
    return by_recording


def stored(collector, spans: list[dict]) -> list[dict]:
    ids = [s["span_id"] for s in spans]
    collector.wait_for_rows(len(ids), "SELECT count() AS n FROM llm_spans WHERE has(['" + "','".join(ids) + "'], span_id)")
    rows = collector.query("SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
    by_id = {r["span_id"]: r for r in rows}
    return [by_id[i] for i in ids]


def billed(call: dict, start_ns: int, lost: set[str] = frozenset()) -> Decimal:
    """genai-prices' price of the call, as the span describes it (facts the peer dropped left out)."""
    usage = {"input_tokens": call["input"], "output_tokens": call["output"],
             "cache_read_tokens": 0 if "cache_read" in lost else call["cache_read"],
             "cache_write_tokens": call["cache_write"],
             "output_reasoning_tokens": 0 if "reasoning" in lost else call["reasoning"]}
    tier = "" if "tier" in lost else call["tier"]
    context = {"service_tier": tier} if tier and tier not in ("standard",) else None
    when = datetime.fromtimestamp(start_ns // 10**9, tz=timezone.utc).replace(microsecond=start_ns // 1000 % 10**6)
    return calc_price(Usage(**{k: v for k, v in usage.items() if v}), call["model"], provider_id=call["provider"],
                      genai_request_timestamp=when, price_context=context).total_price


def check(collector, peer: str, recording: str, lost: set[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    spans = run_peer(peer, recording, collector)
    rows = stored(collector, spans)
    for row, span, call in zip(rows, spans, truth(recording)):
        where = (peer, recording, span["name"], span["attributes"])
        assert row["provider"] == call["provider"], where
        assert row["input_tokens"] == call["input"], where
        assert row["cache_read_tokens"] == (0 if "cache_read" in lost else call["cache_read"]), where
        assert row["cache_write_tokens"] == call["cache_write"], where
        assert row["output_tokens"] == call["output"], where
        assert row["reasoning_tokens"] == (0 if "reasoning" in lost else call["reasoning"]), where
        assert row["price_status"] == "priced", where
        assert row["cost_usd"] == billed(call, span["start"], lost).quantize(NANO, "ROUND_HALF_EVEN"), where
        assert row["input_cost_usd"] + row["cache_read_cost_usd"] + row["cache_write_cost_usd"] + \
            row["output_cost_usd"] == row["cost_usd"], where
    return rows, spans


# -- OpenLLMetry ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recording", [ANTHROPIC_CACHING, OPENAI_CACHING, OPENAI_REASONING, OPENAI_PRIORITY])
def test_openllmetry_spans_are_priced_exactly(collector, recording):
    """Nothing lost: cache reads and writes (Anthropic input already includes them), reasoning, service tier."""
    rows, _ = check(collector, "openllmetry", recording)
    assert {r["scope_name"].split(".")[2] for r in rows} == {"openai" if "openai/" in recording else "anthropic"}


# -- OpenInference -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recording", [ANTHROPIC_CACHING, OPENAI_CACHING, OPENAI_REASONING])
def test_openinference_spans_are_priced_exactly(collector, recording):
    """`llm.token_count.*`, `llm.model_name`, `llm.provider`/`llm.system`: cache and reasoning tokens kept."""
    check(collector, "openinference", recording)


def test_openinference_loses_the_service_tier(collector):
    """OpenInference records no service tier: a `priority` call is stored at the standard price (the span cannot
    tell us otherwise), which is less than what was billed."""
    rows, spans = check(collector, "openinference", OPENAI_PRIORITY, lost={"tier"})
    billed_priority = [billed(c, s["start"]) for c, s in zip(truth(OPENAI_PRIORITY), spans)]
    assert all(c["tier"] == "priority" for c in truth(OPENAI_PRIORITY))
    assert sum(r["cost_usd"] for r in rows) < sum(billed_priority)


# -- OpenLIT -------------------------------------------------------------------------------------------------


def test_openlit_anthropic_input_excludes_the_cache_and_is_counted_in(collector):
    """OpenLIT 1.45 reports Anthropic's raw `input_tokens` (4 here, where 1,167 were billed) next to the cache
    counts: its Anthropic spans get the cache reads and writes added back, so the cost is exact. Its own
    `gen_ai.usage.cost` says 0 (its price list could not be fetched); it is kept in `attributes`, not used."""
    rows, _ = check(collector, "openlit", ANTHROPIC_CACHING)
    assert all(r["attributes"].get("gen_ai.usage.cost") == "0" and r["cost_usd"] > 0 for r in rows)


def test_openlit_openai_prompt_caching_is_priced_exactly(collector):
    check(collector, "openlit", OPENAI_CACHING)


def test_openlit_loses_reasoning_tokens(collector):
    """OpenLIT records no reasoning tokens: `reasoning_tokens` is stored as 0. The cost is still exact, because
    OpenAI bills reasoning as output tokens, which OpenLIT reports in full."""
    check(collector, "openlit", OPENAI_REASONING, lost={"reasoning"})


# -- the official contrib openai-v2 --------------------------------------------------------------------------


def test_contrib_openai_v2_loses_cached_tokens(collector):
    """opentelemetry-instrumentation-openai-v2 2.4b0 reports no cached tokens: the 1,024 cached tokens of the
    second call are stored as uncached input, and its cost is what it would have been without the cache (more
    than was billed). The span cannot tell us better."""
    rows, spans = check(collector, "contrib", OPENAI_CACHING, lost={"cache_read"})
    calls = truth(OPENAI_CACHING)
    cached = [i for i, c in enumerate(calls) if c["cache_read"]]
    assert cached and all(rows[i]["cache_read_tokens"] == 0 for i in cached)
    assert all(rows[i]["cost_usd"] > billed(calls[i], spans[i]["start"]).quantize(NANO, "ROUND_HALF_EVEN") for i in cached)


def test_contrib_openai_v2_reasoning_and_priority(collector):
    """No reasoning tokens either (the cost is still exact: reasoning is billed as output); the service tier is
    there (`openai.response.service_tier`), so a priority call is priced at the priority price."""
    check(collector, "contrib", OPENAI_REASONING, lost={"reasoning"})
    check(collector, "contrib", OPENAI_PRIORITY, lost={"reasoning"})


# -- anthropic 2.x native spans ------------------------------------------------------------------------------


def test_anthropic_native_spans_are_priced_exactly(collector):
    """The SDK's own span (scope com.anthropic.sdk.python): input includes the cache; writes spelled cache_write."""
    rows, _ = check(collector, "native", ANTHROPIC_CACHING)
    assert {r["scope_name"] for r in rows} == {"com.anthropic.sdk.python"}


# -- a peer beside anthropic 2.x's own spans -------------------------------------------------------------------


@pytest.mark.parametrize("peer", ["openllmetry", "openlit"])
def test_a_peer_beside_the_sdks_own_spans_makes_one_exact_row_per_call(collector, peer):
    """With anthropic 2.x's own spans on (its default whenever a tracer provider is set), each call makes two
    spans, the peer's and the SDK's (OpenLLMetry: separate root traces linked by the response id; OpenLIT: the
    SDK's nested in its own). Stored: one row per call, with the usage and the cost the provider billed."""
    python, why = peer_venvs.ensure(peer)
    if python is None:
        pytest.skip(f"{peer_venvs.PEERS[peer]['label']} cannot be installed here: {why}")
    server = ReplayServer(ANTHROPIC_CACHING).start()
    try:
        calls = [{"sdk": "anthropic", "base_url": server.anthropic_base_url, "body": body_of(interaction)}
                 for interaction in server.interactions]
        stats = collector.stats()
        loaded = stats["spans_stored"] + stats["spans_duplicate"]
        job = {"peer": peer, "native_spans": True, "endpoint": collector.http_endpoint + "/v1/traces", "calls": calls}
        done = subprocess.run([str(python), str(HERE / "peer_worker.py")], input=json.dumps(job), capture_output=True,
                              text=True, timeout=180)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-4000:]
    spans = [s for s in json.loads(done.stdout) if any(k.startswith("gen_ai.usage") for k in s["attributes"])]
    assert len(spans) == 2 * len(calls), json.dumps(spans)[:2000]  # the peer's and the SDK's, for each call
    assert len({s["scope"] for s in spans}) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = collector.stats()
        if stats["spans_stored"] + stats["spans_duplicate"] >= loaded + len(spans):
            break
        time.sleep(0.1)
    rows = collector.query(  # plain SQL: FINAL would hide a second row
        "SELECT toUnixTimestamp64Nano(timestamp) AS ts, * FROM llm_spans WHERE has({ids:Array(String)}, span_id) "
        "ORDER BY timestamp", {"ids": [s["span_id"] for s in spans]})
    assert len(rows) == len(calls), [(r["scope_name"], r["response_id"], r["input_tokens"]) for r in rows]
    for row, call in zip(rows, truth(ANTHROPIC_CACHING)):
        where = (peer, row["scope_name"], row["response_id"])
        assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["output_tokens"]) == \
            (call["input"], call["cache_read"], call["cache_write"], call["output"]), where
        assert row["price_status"] == "priced", where
        assert abs(Decimal(str(row["cost_usd"])) - billed(call, int(row["ts"]))) < NANO, where
