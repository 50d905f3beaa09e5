"""Runs real SDK calls under a peer instrumentation, in the peer's own venv (see peer_venvs.py), and exports
the peer's spans with the real OTLP/HTTP exporter to a collector.

    python peer_worker.py < job.json

job: {"peer": "openllmetry" | "openlit" | "openinference" | "contrib" | "native",
      "native_spans": true (optional: anthropic 2.x's own spans on beside the peer's, as by default),
      "endpoint": "http://127.0.0.1:PORT/v1/traces",
      "calls": [{"sdk": "openai" | "anthropic", "base_url": ..., "body": {...}}]}

Prints one JSON document: the finished spans (trace and span id, scope, name, start time, attributes), so
the test can compute what each call should cost. Standard library, the SDKs and OpenTelemetry only.
"""

from __future__ import annotations

import json
import os
import sys

job = json.load(sys.stdin)
peer = job["peer"]
native_spans = peer == "native" or bool(job.get("native_spans"))
if not native_spans:
    os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"  # one instrumentation per test
os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402


class Keep(SpanExporter):
    spans: list = []

    def export(self, spans):
        Keep.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


provider = TracerProvider(resource=Resource.create({"service.name": f"peer-{peer}"}))
provider.add_span_processor(SimpleSpanProcessor(Keep()))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=job["endpoint"])))

if peer == "openllmetry":
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)
elif peer == "openinference":
    from openinference.instrumentation.anthropic import AnthropicInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)
elif peer == "contrib":
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
elif peer == "openlit":
    from opentelemetry import trace

    import openlit

    trace.set_tracer_provider(provider)  # openlit.init reuses the global provider it finds
    openlit.init(disable_metrics=True, collect_gpu_stats=False, pricing_json="/nonexistent/pricing.json")
elif peer != "native":
    raise SystemExit(f"unknown peer {peer!r}")

import anthropic  # noqa: E402
import openai  # noqa: E402

for call in job["calls"]:
    body = call["body"]
    if call["sdk"] == "openai":
        client = openai.OpenAI(base_url=call["base_url"], api_key="test", max_retries=0)
        result = client.chat.completions.create(**body)
    else:
        options = {"open_telemetry": {"tracer_provider": provider}} if native_spans else {}
        client = anthropic.Anthropic(base_url=call["base_url"], api_key="test", max_retries=0, **options)
        result = client.messages.create(**body)
    if body.get("stream"):
        for _ in result:
            pass

provider.force_flush()


def plain(value):
    return list(value) if isinstance(value, tuple) else value


print(json.dumps([{
    "trace_id": format(span.context.trace_id, "032x"),
    "span_id": format(span.context.span_id, "016x"),
    "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
    "name": span.name,
    "start": span.start_time,
    "attributes": {key: plain(value) for key, value in (span.attributes or {}).items()},
} for span in Keep.spans]))
