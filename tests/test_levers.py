"""`otel-llmcost savings` and `whatif` over seeded traffic whose answer is known.

The traffic goes through the real OTLP exporter to a real collector process and its embedded store; the
expected dollars are computed here from `genai-prices` itself, per call, and summed.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from otel_llmcost import cli, names
from otel_llmcost.grafana.dashboards import PANELS, VARIABLES, dashboards
from otel_llmcost.alerts.macros import ALL, expand
from otel_llmcost.levers import MONTH_SECONDS, usage_groups
from otel_llmcost.levers import per_month as monthly
from otel_llmcost.levers.savings import Finder
from otel_llmcost.levers.whatif import Scenario, SelfHost, Swap, reprice, scenario_of
from otel_llmcost.store import RemoteStore

NOW = datetime.now(timezone.utc)
FIRST = NOW - timedelta(hours=30)
PREFIX_TOKENS = 4000  # a 16,000-character system prompt

# faq: a premium model for one-line answers, the same big uncached system prompt every time, users waiting.
FAQ = dict(project="shop", feature="faq", provider="openai", model="gpt-4o", calls=100, input=5000, output=50)
# digest: a nightly job, no user, 60 calls within one minute; 5 runaway outputs of 2,000 tokens.
# Its calls together have more input than Claude's long-context threshold (200k), each far less: priced per call.
DIGEST = dict(project="ops", feature="digest", provider="anthropic", model="claude-sonnet-4-5", calls=60,
              input=4001, output=100)
RUNAWAY = 5


def _span(i: int, spec: dict, start: datetime, output: int, user: str, prefix: bool, extra: dict | None = None):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    attributes = {
        names.OPERATION: "chat", names.PROVIDER: spec["provider"], names.REQUEST_MODEL: spec["model"],
        names.RESPONSE_MODEL: spec["model"], names.INPUT_TOKENS: spec["input"], names.OUTPUT_TOKENS: output,
        names.PROJECT: spec["project"], names.FEATURE: spec["feature"],
    }
    if user:
        attributes[names.USER_ID] = user
    if prefix:
        attributes.update({names.PREFIX_HASH: "f" * 16, names.PREFIX_LENGTH: PREFIX_TOKENS * 4})
    attributes.update(extra or {})
    start_ns = int(start.timestamp() * 1e9)
    context = SpanContext(trace_id=(hash(spec["feature"]) & (2**64 - 1)) << 64 | i + 1, span_id=i + 1,
                          is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return ReadableSpan(name=f"chat {spec['model']}", context=context, kind=SpanKind.CLIENT,
                        resource=Resource.create({"service.name": "levers-app"}), attributes=attributes,
                        start_time=start_ns, end_time=start_ns + 10**9,
                        instrumentation_scope=InstrumentationScope("tests.levers"))


def _traffic() -> list[tuple[dict, datetime, int, str, bool]]:
    calls = []
    for i in range(FAQ["calls"]):  # spread over 30 hours: one call every 18 minutes
        calls.append((FAQ, FIRST + timedelta(minutes=18 * i), FAQ["output"], f"user-{i % 7}", True))
    night = NOW - timedelta(hours=5)
    for i in range(DIGEST["calls"]):
        output = 2000 if i < RUNAWAY else DIGEST["output"]
        calls.append((DIGEST, night + timedelta(milliseconds=500 * i), output, "", False))
    return calls


def price(spec: dict, output: int, model: str | None = None, **context) -> Decimal:
    return calc_price(Usage(input_tokens=spec["input"], output_tokens=output), model or spec["model"],
                      provider_id=spec["provider"], genai_request_timestamp=NOW, price_context=context or None).total_price


@pytest.fixture(scope="module")
def seeded(collector):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    traffic = _traffic()
    spans = [_span(i, spec, start, output, user, prefix)
             for i, (spec, start, output, user, prefix) in enumerate(traffic)]
    exporter = OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces")
    assert exporter.export(spans).name == "SUCCESS"
    collector.wait_for_rows(len(spans), timeout=60)
    return RemoteStore(collector.store_url, collector.http_endpoint), traffic


def test_savings_findings_match_genai_prices(seeded):
    store, traffic = seeded
    before = time.time()
    finder = Finder(store, 30 * 86_400)
    # the traffic's first call to now, whenever the test runs after the module's traffic was made
    assert int(before - FIRST.timestamp()) - 1 <= finder.covered <= int(time.time() - FIRST.timestamp()) + 1
    found = {(f.kind, f.feature): f for f in finder.find()}

    # faq's calls come 18 minutes apart, longer than a prompt cache lives: caching its prefix would save nothing
    assert ("prompt-cache", "faq") not in found
    # the same usage on gpt-4o-mini
    expected = sum((price(FAQ, FAQ["output"]) - price(FAQ, FAQ["output"], "gpt-4o-mini")
                    for _ in range(FAQ["calls"])), Decimal(0))
    assert found[("cheaper-model", "faq")].monthly_savings_usd == monthly(expected, finder.covered)
    assert found[("cheaper-model", "faq")].estimate
    # digest: no user and all in one minute, so the Batch API fits it
    outputs = [output for spec, _, output, _, _ in traffic if spec is DIGEST]
    expected = sum((price(DIGEST, o) - price(DIGEST, o, processing="batch") for o in outputs), Decimal(0))
    assert found[("batch", "digest")].monthly_savings_usd == monthly(expected, finder.covered)
    assert ("batch", "faq") not in found  # users are waiting
    # digest's output cap at its 90th percentile (100 tokens) cuts 5 x 1,900 output tokens
    beyond = calc_price(Usage(output_tokens=RUNAWAY * 1900), DIGEST["model"], provider_id="anthropic",
                        genai_request_timestamp=NOW).total_price
    cap = found[("output-cap", "digest")]
    assert cap.monthly_savings_usd == monthly(beyond, finder.covered) and "max_tokens=100" in cap.detail
    # largest first, each with its query
    savings = [f.monthly_savings_usd for f in finder.find()]
    assert savings == sorted(savings, reverse=True)
    assert all("llm_spans" in f.query and "{" not in f.query for f in finder.find())


def test_usage_groups_read_the_service_tier_under_each_of_the_collector_s_spellings(collector):
    """The levers' SQL takes its list of service-tier attributes from the collector (`SERVICE_TIER_KEYS`)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from otel_llmcost.collector.normalize import SERVICE_TIER_KEYS
    from otel_llmcost.levers import usage_groups

    start = NOW - timedelta(hours=1)
    spans = [_span(3000 + i, dict(FAQ, feature=f"tier-{i}"), start, 10, "u", False, {key: f"flex-{i}"})
             for i, key in enumerate(SERVICE_TIER_KEYS)]
    before = collector.query("SELECT count() AS n FROM llm_spans")[0]["n"]
    assert OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces").export(spans).name == "SUCCESS"
    collector.wait_for_rows(before + len(spans), timeout=60)
    store = RemoteStore(collector.store_url, collector.http_endpoint)
    groups, query = usage_groups(store, 30 * 86_400)
    tiers = {g.feature: g.service_tier for g in groups if g.feature.startswith("tier-")}
    assert tiers == {f"tier-{i}": f"flex-{i}" for i in range(len(SERVICE_TIER_KEYS))}
    assert all(f"'{key}'" in query for key in SERVICE_TIER_KEYS) and "{" not in query


def test_savings_finds_an_uncached_prefix(collector):
    """Calls a minute apart share a 5-minute cache window: all but the first of each window would read it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spec = dict(FAQ, feature="support-chat", calls=40)
    start = NOW - timedelta(hours=2, seconds=NOW.second, microseconds=NOW.microsecond)
    spans = [_span(1000 + i, spec, start + timedelta(minutes=i), 50, "u", True) for i in range(spec["calls"])]
    before = collector.query("SELECT count() AS n FROM llm_spans")[0]["n"]
    assert OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces").export(spans).name == "SUCCESS"
    collector.wait_for_rows(before + len(spans), timeout=60)
    store = RemoteStore(collector.store_url, collector.http_endpoint)
    finder = Finder(store, 30 * 86_400)
    windows = len({int((start + timedelta(minutes=i)).timestamp()) // 300 for i in range(spec["calls"])})
    reads = spec["calls"] - windows
    read_saving = calc_price(Usage(input_tokens=PREFIX_TOKENS), "gpt-4o", provider_id="openai",
                             genai_request_timestamp=NOW).total_price - calc_price(
        Usage(input_tokens=PREFIX_TOKENS, cache_read_tokens=PREFIX_TOKENS), "gpt-4o", provider_id="openai",
        genai_request_timestamp=NOW).total_price
    (finding,) = [f for f in finder.find() if f.kind == "prompt-cache" and f.feature == "support-chat"]
    assert finding.monthly_savings_usd == monthly(reads * read_saving, finder.covered)


def test_whatif_swap_batch_discount_and_self_host(seeded):
    store, traffic = seeded
    groups, _ = usage_groups(store, 30 * 86_400)
    groups = [g for g in groups if g.feature in ("faq", "digest")]
    seconds = 30 * 3600
    scenario = Scenario(swaps=[Swap("gpt-4o", "gpt-4o-mini", "faq")], batch=["digest"])
    lines, verdicts = reprice(groups, scenario, seconds)
    by_feature = {l.feature: l for l in lines}
    faq_outputs = [o for spec, _, o, _, _ in traffic if spec is FAQ]
    digest_outputs = [o for spec, _, o, _, _ in traffic if spec is DIGEST]
    assert by_feature["faq"].current_usd == sum((price(FAQ, o) for o in faq_outputs), Decimal(0))
    assert by_feature["faq"].whatif_usd == sum((price(FAQ, o, "gpt-4o-mini") for o in faq_outputs), Decimal(0))
    assert by_feature["digest"].whatif_usd == sum((price(DIGEST, o, processing="batch") for o in digest_outputs),
                                                  Decimal(0))
    assert not verdicts

    host = SelfHost("claude-sonnet-*", Decimal("4"), 8, Decimal("3000"))
    lines, (verdict,) = reprice(groups, Scenario(self_host=[host]), seconds)
    tokens = sum(DIGEST["input"] + o for o in digest_outputs)
    assert verdict.replicas == 1 and verdict.tokens == tokens
    assert verdict.gpu_cost_usd == Decimal(4 * 8 * 30)  # 30 hours of 8 GPUs
    api = sum((price(DIGEST, o) for o in digest_outputs), Decimal(0))
    assert verdict.break_even_tokens_per_day == int(Decimal(4 * 8 * 24) / (api / tokens))
    # unchanged usage keeps its stored cost exactly
    assert {l.feature: l.whatif_usd for l in lines}["faq"] == by_feature["faq"].current_usd


def test_whatif_command_and_its_mistakes(seeded, collector, capsys, tmp_path):
    assert cli.main(["whatif", "--store", collector.store_url, "--since", "7d", "--discount", "openai=15",
                     "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    faq = next(l for l in out["lines"] if l["feature"] == "faq")
    assert Decimal(faq["whatif_usd"]) == Decimal(faq["current_usd"]) * Decimal("0.85")
    assert cli.main(["whatif", "--store", collector.store_url, "--batch", "digest"]) == 0
    table = capsys.readouterr().out
    assert "digest" in table and "batch" in table and "total:" in table
    assert max(len(line) for line in table.splitlines()) <= 100

    bad = tmp_path / "whatif.yaml"
    bad.write_text("swap: [{from: gpt-4o}]\n")
    for argv, message in [
        ([], "no change given"),
        (["--swap", "gpt-4o"], "expected FROM=TO"),
        (["--discount", "openai=lots"], "not a number"),
        (["--discount", "openai=150"], "at most 100"),
        (["--self-host", "llama:gpus=2"], "gpu_hour_usd"),
        (["--file", str(tmp_path / "missing.yaml")], "cannot read"),
        (["--file", str(bad)], "expected from: and to:"),
    ]:
        assert cli.main(["whatif", "--store", collector.store_url, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_savings_command_formats(seeded, collector, capsys):
    assert cli.main(["savings", "--store", collector.store_url, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kinds = {(f["kind"], f["feature"]) for f in out["findings"]}
    assert {("cheaper-model", "faq"), ("batch", "digest"), ("output-cap", "digest")} <= kinds
    assert all(isinstance(f["monthly_savings_usd"], str) and f["query"] for f in out["findings"])
    # --save appends the run to llm_savings, which the dashboard's panel reads
    assert cli.main(["savings", "--store", collector.store_url, "--save", "--format", "json"]) == 0
    saved = json.loads(capsys.readouterr().out)["findings"]
    rows = collector.query("SELECT kind, feature, toString(monthly_savings_usd) AS usd, query FROM llm_savings "
                           "WHERE computed_at = (SELECT max(computed_at) FROM llm_savings)")
    assert sorted((r["kind"], r["feature"], r["usd"]) for r in rows) == sorted(
        (f["kind"], f["feature"], f["monthly_savings_usd"].rstrip("0").rstrip(".")) for f in saved)
    # the overview dashboard's panel: the latest run, largest first, the dashboard's variables applied
    now = datetime.now(timezone.utc)
    panel = PANELS["Savings found (latest savings run)"]
    every = {v: ALL for v in VARIABLES}
    shown = collector.query(expand(panel.sql, now - timedelta(hours=1), now, 60, every))
    amounts = [Decimal(str(r["monthly_savings_usd"])) for r in shown]
    assert amounts == sorted(amounts, reverse=True)
    assert sorted((r["kind"], r["feature"], amount) for r, amount in zip(shown, amounts)) == sorted(
        (f["kind"], f["feature"], Decimal(f["monthly_savings_usd"])) for f in saved)
    assert all(r["query"] for r in shown)
    [shipped] = [p for p in dashboards()["llmcost-overview"]["panels"] if p["title"] == panel.title]
    assert "savings --save" in shipped["fieldConfig"]["defaults"]["noValue"]  # an empty table says what to run
    digest = collector.query(expand(panel.sql, now - timedelta(hours=1), now, 60, {**every, "feature": ["digest"]}))
    assert digest and {r["feature"] for r in digest} == {"digest"}
    assert cli.main(["savings", "--store", collector.store_url, "--show-queries"]) == 0
    table = capsys.readouterr().out
    assert table.index("batch") < table.index("-- the query behind finding")
    findings = table[:table.index("-- the query behind")]
    assert max(len(line) for line in findings.splitlines()) <= 100, findings
