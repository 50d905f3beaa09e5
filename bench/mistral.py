"""The Mistral adapter's overhead (`python -m bench mistral`): CPU microseconds our wrapper and stream reader add
to `mistralai` calls. The SDK answers from `httpx2.MockTransport` with the sandbox's Mistral bodies (no
network); spans go through a `BatchSpanProcessor` to an exporter that discards them."""

from __future__ import annotations

import json
import os
import statistics

from .common import log, table
from .instr_worker import time_per_call

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"}]


def _bodies(chunks: int) -> dict[bool, bytes]:
    from otel_llmcost import sandbox

    sb = sandbox.Sandbox()  # (not started: its endpoint functions make the bodies)
    request = {"model": "mistral-small-latest", "messages": MESSAGES, "max_tokens": chunks * 4}
    plain = sandbox._mistral_chat(sb, request, json.dumps(request).encode())
    events = sandbox._mistral_chat(sb, {**request, "stream": True}, json.dumps({**request, "stream": True}).encode())
    sse = "".join(f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n" for _, d in events)
    return {False: json.dumps(plain).encode(), True: sse.encode()}


def _client(chunks: int):
    import httpx2
    from mistralai.client import Mistral

    bodies = _bodies(chunks)

    def handler(request):
        stream = b'"stream":true' in request.content or b'"stream": true' in request.content
        return httpx2.Response(200, headers={"content-type": "text/event-stream" if stream else "application/json"},
                               content=bodies[stream])

    return Mistral(api_key="bench", server_url="https://api.mistral.ai", client=httpx2.Client(
        transport=httpx2.MockTransport(handler))), bodies[True].count(b"data: {")


def run(rounds: int = 5, quick: bool = False) -> str:
    """Per call: the whole SDK call bare and instrumented (the SDK's own cost, for scale); our request wrapper
    around a function returning the response a real call returned, against a span with the same attributes made
    by hand (the OpenTelemetry SDK's price, paid by any instrumentation). Per streamed event: real events
    through our reader against the same events bare."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import INVALID_SPAN, SpanKind

    from otel_llmcost.instrumentation import mistral
    from otel_llmcost.instrumentation.core import RequestTracer, _Call, _Events, _Observed

    class Discard(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("bench")
    n = 50 if quick else 2000
    client, _ = _client(100)
    request = {"model": "mistral-small-latest", "messages": MESSAGES}
    response = client.chat.complete(**request)
    events = list(client.chat.stream(**request))

    def complete(**kwargs):  # (named as the SDK method: `describe` reads the name)
        return response

    wrapper = RequestTracer(tracer, mistral.MistralInstrumentor().provider()).sync_wrapper
    seen = InMemorySpanExporter()
    seeing = TracerProvider()
    seeing.add_span_processor(SimpleSpanProcessor(seen))
    RequestTracer(seeing.get_tracer("seen"), mistral.MistralInstrumentor().provider()).sync_wrapper(
        complete, client.chat, (), request)
    (span,) = seen.get_finished_spans()
    name, attributes = span.name, dict(span.attributes)

    def ours():
        wrapper(complete, client.chat, (), request)

    def by_hand():
        tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes).end()

    def read_events():
        call = _Call(INVALID_SPAN, mistral.CHAT)
        call.reader = _Observed(mistral.CHAT.stream_reader(), mistral.CHAT.stream_finish_reasons)
        for _ in _Events(iter(events), call):
            pass

    def bare_events():
        for _ in iter(events):
            pass

    figures: dict[str, list[float]] = {"sdk": [], "ours": [], "span": [], "event": []}
    for round_ in range(rounds):
        log(f"mistral round {round_ + 1}/{rounds}")
        figures["sdk"].append(time_per_call(lambda: client.chat.complete(**request), max(n // 20, 10), loops=1))
        figures["ours"].append(time_per_call(ours, n, loops=1))
        figures["span"].append(time_per_call(by_hand, n, loops=1))
        passes = max(n // len(events), 10)
        figures["event"].append((time_per_call(read_events, passes, loops=1)
                                 - time_per_call(bare_events, passes, loops=1)) / len(events))
    provider.shutdown()
    sdk, ours_, span_, event = (statistics.median(figures[key]) for key in ("sdk", "ours", "span", "event"))
    rows = [
        ["the bare SDK call `chat.complete` (mock transport), for scale", f"{sdk:.0f}"],
        [f"our wrapper around one call, span included ({len(attributes)} attributes)", f"{ours_:.1f}"],
        ["the same span made by hand (the OpenTelemetry SDK's price)", f"{span_:.1f}"],
        ["what our code adds per call", f"{ours_ - span_:+.1f}"],
        [f"what our stream reader adds per event ({len(events)}-event stream)", f"{event:+.2f}"],
    ]
    load = os.getloadavg()[0]
    return (table(["mistralai (CPU µs, median of rounds)", "µs"], rows)
            + f"\n\nIn one process, {rounds} rounds, medians, at load average {load:.1f} on this machine. The SDK "
            "answers from `httpx2.MockTransport` with the sandbox's Mistral bodies. Our wrapper is timed around a "
            "function returning the response a real `chat.complete` returned, against one span with the same name "
            "and attributes made by hand; the reader per event over the events of a real stream (parsed once by "
            "the SDK) against the same events iterated bare.")
