"""Self-hosted means unpriced unless told: calls to loopback, private networks and known self-hosting servers
(Ollama, vLLM, LM Studio, llama.cpp, TGI) get a provider name of their own, in the instrumentation (the SDK's
base URL) and in the collector (`server.address` of other instrumentations' spans), and are priced by the price
file only, else `unpriced` with a note that says how to price them; never at a hosted API's price guessed from
the model's name. The real SDKs call written fixtures served on 127.0.0.1; a real collector stores the rows.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price
from genai_prices import types as price_types
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import CollectorProcess
from otel_llmcost import hosts, names
from otel_llmcost.instrumentation import anthropic as anthropic_adapter
from otel_llmcost.instrumentation import openai as openai_adapter

from test_pricing import emit

try:
    from . import replay
except ImportError:
    import replay

FIXTURES = Path(__file__).parent / "fixtures" / "self_hosted"
NANO = Decimal("1e-9")
# The price file's self-hosted entry: $1.20 per GPU hour over 900 tokens/s, for every self-hosted server.
PRICE_FILE = """
models:
  - model: "deepseek-r1:8b"
    provider: self-hosted
    gpu_hour_usd: 1.20
    tokens_per_second: 900
"""


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def when(timestamp_ns: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ns // 10**9, tz=timezone.utc).replace(
        microsecond=timestamp_ns // 1000 % 1_000_000)


def gpu_hour_cost(usage: Usage) -> Decimal:
    """The price file's GPU-hour price of a usage, through genai-prices' own price arithmetic."""
    per_mtok = Decimal("1.20") / 3600 / 900 * 1_000_000
    return price_types.ModelPrice(input_mtok=per_mtok, output_mtok=per_mtok).calc_price(usage)["total_price"]


def clear_host_caches() -> None:
    openai_adapter._provider_for_host.cache_clear()
    openai_adapter._provider_names.clear()
    anthropic_adapter.provider_for_host.cache_clear()
    hosts.self_hosted_provider.cache_clear()


@pytest.fixture
def no_host_settings(monkeypatch):
    """As a user's app runs: no host mapping (the suite's conftest maps 127.0.0.1 to the hosted APIs)."""
    monkeypatch.delenv("OTEL_LLMCOST_PROVIDER_HOSTS", raising=False)
    monkeypatch.delenv("OTEL_LLMCOST_OPENAI_PROVIDER", raising=False)
    clear_host_caches()
    yield monkeypatch
    clear_host_caches()


@pytest.fixture(scope="module")
def local_collector(tmp_path_factory):
    """A collector with no host mapping of its own and a price file with one self-hosted model."""
    directory = tmp_path_factory.mktemp("self-hosted")
    (directory / "prices.yaml").write_text(PRICE_FILE)
    process = CollectorProcess(directory / "llmcost", {"OTEL_LLMCOST_PROVIDER_HOSTS": "",
                                                       "OTEL_LLMCOST_PRICES": str(directory / "prices.yaml")}).start()
    yield process
    process.stop()


def export(collector, finished) -> list[dict]:
    assert HttpExporter(endpoint=collector.http_endpoint + "/v1/traces").export(finished) == SpanExportResult.SUCCESS
    ids = [format(s.context.span_id, "016x") for s in finished]
    collector.wait_for_rows(len(ids), "SELECT count() AS n FROM llm_spans WHERE has(['" + "','".join(ids) + "'], span_id)")
    return collector.query("SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) ORDER BY timestamp",
                           {"ids": ids})


@pytest.mark.parametrize("host, port, expected", [
    ("127.0.0.1", None, "self-hosted"),
    ("localhost", 8000, "self-hosted"),
    ("::1", None, "self-hosted"),
    ("127.0.0.1", 11434, "ollama"),
    ("192.168.1.20", 1234, "lmstudio"),
    ("10.0.0.5", 8080, "self-hosted"),
    ("100.101.102.103", None, "self-hosted"),  # a Tailscale address
    ("vllm", 8000, "vllm"),                    # a compose service name
    ("gpu1.llama-cpp.lan", None, "llamacpp"),
    ("tgi-0.tgi.svc.cluster.local", 80, "tgi"),
    ("ollama.example.com", 443, "ollama"),
    ("llm.corp.internal", None, "self-hosted"),
    ("api.openai.com", 443, None),
    ("llm-gateway.example.com", 443, None),
    ("8.8.8.8", None, None),
])
def test_which_hosts_are_self_hosting_servers(host, port, expected):
    assert hosts.self_hosted_provider(host, port) == expected


@pytest.mark.parametrize("env, expected", [
    ({}, "self-hosted"),
    ({"OTEL_LLMCOST_PROVIDER_HOSTS": "127.0.0.1=hosted"}, "openai"),     # a stand-in or proxy of the hosted API
    ({"OTEL_LLMCOST_PROVIDER_HOSTS": "127.0.0.1=ollama"}, "ollama"),
    ({"OTEL_LLMCOST_OPENAI_PROVIDER": "groq"}, "groq"),                  # an explicit setting wins
])
def test_the_loopback_rule_yields_to_explicit_settings(env, expected, no_host_settings):
    for key, value in env.items():
        no_host_settings.setenv(key, value)
    assert openai_adapter._provider_for_host("127.0.0.1", False, 8000) == expected


def test_openai_sdk_calls_to_a_local_server_are_priced_by_the_price_file_only(no_host_settings, spans,
                                                                              local_collector):
    rec = fixture("openai_compatible_chat.json")
    with replay.ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="ollama", max_retries=0)
        for model in ("deepseek-r1:8b", "mistral-large-latest"):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Capital of France?"}])
        assert server.unmatched == []
    finished = spans.get_finished_spans()
    assert [s.attributes[names.PROVIDER] for s in finished] == ["self-hosted", "self-hosted"]
    deepseek, mistral = export(local_collector, finished)
    usage = Usage(input_tokens=1840, output_tokens=612)
    # The catalog, asked without a provider, would have guessed DeepSeek's API for the local model.
    assert calc_price(usage, "deepseek-r1:8b").provider.id == "deepseek"
    assert (deepseek["provider"], deepseek["price_status"]) == ("self-hosted", "priced")
    assert deepseek["cost_usd"] == gpu_hour_cost(usage).quantize(NANO, ROUND_HALF_EVEN)
    assert deepseek["price_source"].startswith("prices.yaml sha256:")
    assert (mistral["provider"], mistral["price_status"], mistral["cost_usd"]) == ("self-hosted", "unpriced", None)
    assert "mistral-large-latest" in mistral["price_note"] and "gpu_hour_usd" in mistral["price_note"]
    assert "OTEL_LLMCOST_PROVIDER_HOSTS" in mistral["price_note"]


def test_anthropic_sdk_calls_to_a_local_server_are_self_hosted(no_host_settings, spans, local_collector):
    rec = fixture("anthropic_compatible_messages.json")
    with replay.ReplayServer(rec) as server:
        client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="ollama", max_retries=0)
        client.messages.create(model="qwen3-coder:30b", max_tokens=100,
                               messages=[{"role": "user", "content": "Capital of France?"}])
    [span] = spans.get_finished_spans()
    assert span.attributes[names.PROVIDER] == "self-hosted"
    [row] = export(local_collector, [span])
    assert (row["price_status"], row["cost_usd"], row["input_tokens"]) == ("unpriced", None, 512)
    assert "self-hosted model 'qwen3-coder:30b'" in row["price_note"]


def test_a_mapped_host_keeps_the_hosted_price(no_host_settings, spans, local_collector):
    no_host_settings.setenv("OTEL_LLMCOST_PROVIDER_HOSTS", "127.0.0.1=hosted")
    rec = fixture("openai_compatible_chat.json")
    with replay.ReplayServer(rec) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model="deepseek-r1:8b", messages=[{"role": "user", "content": "?"}])
    [span] = spans.get_finished_spans()
    assert span.attributes[names.PROVIDER] == "openai"


def test_other_instrumentations_spans_are_judged_by_their_server_address(local_collector):
    """Spans of another instrumentation name the SDK's provider whatever the host: the collector reads
    `server.address`/`server.port` (as OpenTelemetry's contrib instrumentations and the Anthropic SDK set them)."""
    start = time.time_ns()

    def peer(model: str, address: str, port: int, tokens: tuple[int, int], offset: int) -> dict:
        return {"attributes": {"gen_ai.system": "openai", names.OPERATION: "chat", names.REQUEST_MODEL: model,
                               names.INPUT_TOKENS: tokens[0], names.OUTPUT_TOKENS: tokens[1],
                               "server.address": address, "server.port": port}, "start": start + offset}

    ids = emit(local_collector, [peer("deepseek-r1:8b", "127.0.0.1", 11434, (300, 90), 0),
                                 peer("mistral-large-latest", "vllm", 8000, (920, 75), 1),
                                 peer("gpt-4o-mini", "api.openai.com", 443, (1149, 353), 2)])
    ollama, vllm, hosted = local_collector.query(
        "SELECT * FROM llm_spans FINAL WHERE has({ids:Array(String)}, span_id) ORDER BY timestamp", {"ids": ids})
    assert (ollama["provider"], ollama["price_status"]) == ("ollama", "priced")
    assert ollama["cost_usd"] == gpu_hour_cost(Usage(input_tokens=300, output_tokens=90)).quantize(NANO, ROUND_HALF_EVEN)
    assert ollama["attributes"][names.REPORTED_PROVIDER] == "openai"
    assert (vllm["provider"], vllm["price_status"], vllm["cost_usd"]) == ("vllm", "unpriced", None)
    assert "provider vllm" in vllm["price_note"]
    expected = calc_price(Usage(input_tokens=1149, output_tokens=353), "gpt-4o-mini", provider_id="openai",
                          genai_request_timestamp=when(start + 2)).total_price
    assert (hosted["provider"], hosted["cost_usd"]) == ("openai", expected.quantize(NANO, ROUND_HALF_EVEN))
    assert names.REPORTED_PROVIDER not in hosted["attributes"]
