"""The budget guard (`otel_llmcost.guard`): real OpenAI SDK calls to the sandbox, spans exported over OTLP to a real
collector process, budgets set with the real `budget` command, the guard reading the collector's endpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import time

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_llmcost
from otel_llmcost import cli, guard, names
from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

try:
    from .conftest import free_port
    from .test_instr_support import sandbox  # noqa: F401 - fixture
except ImportError:
    from conftest import free_port
    from test_instr_support import sandbox  # noqa: F401


@pytest.fixture(scope="module")
def app(collector, tracing):
    """This process as an app: OpenAI instrumented with a provider that exports to the collector (and keeps the
    spans in memory); the session's instrumentation is put back afterwards."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.http_endpoint + "/v1/traces")))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    OpenAIInstrumentor().uninstrument()
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    yield provider, memory
    guard.disable()
    OpenAIInstrumentor().uninstrument()
    OpenAIInstrumentor().instrument(tracer_provider=tracing[0])


@contextlib.contextmanager
def budget(collector, scope: str, period: str, amount: str | None = None, tokens: int | None = None):
    argv = ["budget", "set", "--store", collector.store_url, "--scope", scope, "--period", period]
    argv += ["--amount", amount] * bool(amount) + ["--tokens", str(tokens)] * bool(tokens)
    assert cli.main(argv) == 0
    try:
        yield
    finally:
        assert cli.main(["budget", "remove", "--store", collector.store_url, "--scope", scope, "--period", period]) == 0


def call(client, **attribution):
    with otel_llmcost.attributes(**attribution):
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=30)


def wait_for(collector, memory) -> None:
    """Until the collector has stored the last call's span."""
    span_id = memory.get_finished_spans()[-1].context.span_id
    collector.wait_for_rows(1, f"SELECT count() AS n FROM llm_spans WHERE span_id = '{span_id:016x}'")


@pytest.mark.parametrize("scope, period, amount, tokens, attribution, other", [
    ("user=alice", "day", None, 1, {"user_id": "alice"}, {"user_id": "bob"}),
    ("project=shop", "hour", "0.000001", None, {"project": "shop"}, {"project": "ops"}),
    ("feature=search", "month", None, 1, {"feature": "search"}, {"feature": "chat"}),
    ("all", "day", None, "today+1", {"project": "any"}, None),
])
def test_a_call_over_a_budget_is_stopped_and_the_others_go_ahead(collector, app, sandbox, scope, period, amount,
                                                                tokens, attribution, other):
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    _, memory = app
    if tokens == "today+1":  # every scope's calls count for `all`: its limit is one token over today's so far
        tokens = 1 + collector.query("SELECT sum(input_tokens + output_tokens) AS n FROM llm_rollup_1m "
                                     "WHERE minute >= toStartOfDay(now('UTC'))")[0]["n"]
    with budget(collector, scope, period, amount, tokens):
        guard.enable(collector.http_endpoint, action="raise", poll_seconds=3600, lag_seconds=0)
        call(client, **attribution)  # nothing spent yet in this scope: it goes ahead
        wait_for(collector, memory)
        guard.active.poll()  # the next poll, now rather than in an hour
        with pytest.raises(guard.BudgetExceeded) as stopped:
            call(client, **attribution)  # the scope's spend has reached the limit
        over = stopped.value
        assert (over.scope, over.period) == (scope.partition("=")[0], period)
        assert over.scope_value == scope.partition("=")[2]
        assert over.unit == ("tokens" if tokens else "usd") and over.spent >= over.limit
        # the stopped call was never sent (no response); its span is stored as a failed call, with nothing billed
        span = memory.get_finished_spans()[-1]
        assert span.attributes[names.ERROR_TYPE] == "BudgetExceeded" and guard.OVER_BUDGET in span.attributes
        assert names.RESPONSE_ID not in span.attributes
        stopped_row = f"FROM llm_spans WHERE span_id = '{span.context.span_id:016x}'"
        collector.wait_for_rows(1, "SELECT count() AS n " + stopped_row)
        (row,) = collector.query("SELECT response_id, input_tokens, output_tokens, cost_usd " + stopped_row)
        assert row == {"response_id": "", "input_tokens": 0, "output_tokens": 0, "cost_usd": None}
        if other is not None:
            call(client, **other)  # another project, feature or user is not held back
            wait_for(collector, memory)
    guard.disable()


def test_a_burst_is_stopped_between_polls(collector, app, sandbox):
    """With no poll after the first, this process's own calls count: the burst stops at the limit."""
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    _, memory = app
    with budget(collector, "user=burst", "hour", tokens=300):
        guard.enable(collector.http_endpoint, action="raise", poll_seconds=3600, lag_seconds=3600)
        spent, made = 0, 0
        with pytest.raises(guard.BudgetExceeded) as stopped:
            for _ in range(50):
                call(client, user_id="burst")
                made += 1
                attributes = memory.get_finished_spans()[-1].attributes
                spent += attributes[names.INPUT_TOKENS] + attributes[names.OUTPUT_TOKENS]
        assert spent >= 300 and spent - attributes[names.INPUT_TOKENS] - attributes[names.OUTPUT_TOKENS] < 300
        assert stopped.value.spent == spent and made < 50
    guard.disable()


def test_the_hook_can_switch_the_model_and_record_only_lets_it_through(collector, app, sandbox):
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    _, memory = app
    seen = []

    def cheaper(over, request):
        seen.append((over.scope, over.scope_value, request["model"]))
        return {"model": "gpt-4.1-nano", "max_tokens": 5}

    with budget(collector, "user=hooked", "day", tokens=1):
        guard.enable(collector.http_endpoint, hook=cheaper, poll_seconds=3600, lag_seconds=0)
        call(client, user_id="hooked")
        wait_for(collector, memory)
        guard.active.poll()
        response = call(client, user_id="hooked")
        assert seen == [("user", "hooked", "gpt-4o-mini")]
        assert response.model.startswith("gpt-4.1-nano")  # the provider got the changed request
        span = memory.get_finished_spans()[-1]
        assert span.attributes[names.REQUEST_MODEL] == "gpt-4.1-nano"

        guard.enable(collector.http_endpoint, action="record", poll_seconds=3600, lag_seconds=0)
        response = call(client, user_id="hooked")
        assert response.model.startswith("gpt-4o-mini")
        assert "user hooked" in memory.get_finished_spans()[-1].attributes[guard.OVER_BUDGET]
    guard.disable()


def test_it_fails_open_when_the_collector_cannot_be_reached(app, sandbox, caplog):
    client = openai.OpenAI(base_url=sandbox.openai_base_url, api_key="x", max_retries=0)
    _, memory = app
    guard.enable(f"http://127.0.0.1:{free_port()}", action="raise", poll_seconds=0)
    with caplog.at_level(logging.WARNING, logger="otel_llmcost.guard"):
        call(client, user_id="alice")
        call(client, user_id="alice")
    assert memory.get_finished_spans()[-1].attributes[guard.STATUS] == "unavailable"
    assert len([r for r in caplog.records if "cannot read budgets" in r.getMessage()]) == 1
    guard.disable()


APP = textwrap.dedent("""
    import sys
    import openai
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    import otel_llmcost
    from otel_llmcost.guard import BudgetExceeded
    from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()  # OTEL_LLMCOST_GUARD turns the guard on here
    client = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
    made = 0
    try:
        for _ in range(int(sys.argv[2])):
            with otel_llmcost.attributes(user_id="carol"):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            made += 1
    except BudgetExceeded as exc:
        print(f"stopped after {made}: {exc}")
    else:
        print(f"made {made}")
""")


def test_two_processes_of_one_app_share_the_budget(collector, sandbox, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {**os.environ, "OTEL_LLMCOST_GUARD": "raise", "OTEL_LLMCOST_GUARD_POLL_SECONDS": "0",
           "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}

    def run(calls: int) -> str:
        done = subprocess.run([sys.executable, str(script), sandbox.openai_base_url, str(calls)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with budget(collector, "user=carol", "day", tokens=1):
        assert run(1) == "made 1"  # the first process spends (its span reaches the collector before it exits)
        collector.wait_for_rows(1, "SELECT count() AS n FROM llm_spans WHERE user_id = 'carol'")
        assert run(3).startswith("stopped after 0: budget exceeded: user carol")  # the second sees it at once
