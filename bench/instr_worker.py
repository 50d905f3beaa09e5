"""One round of the instrumentation benchmark for one variant, in whichever venv runs it.

    python -m bench.instr_worker VARIANT N_PLAIN N_STREAM CHUNKS_SMALL CHUNKS_LARGE [memory CALLS]

Prints one JSON line: microseconds per call of each scenario (median of 3 timed loops after a warm-up).
Standard library, the SDKs and OpenTelemetry only: it runs in the peers' venvs, where otel_llmcost is absent.
VARIANT: bare, ours, native (anthropic's own spans), contrib, openllmetry, openlit; ours_metrics and contrib_metrics
(a global meter provider set, as `opentelemetry-instrument` sets one, so the GenAI client metrics are recorded),
ours_no_metrics (the same meter provider, our metrics switched off with OTEL_LLMCOST_METRICS=false).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

# Run as a script, the variant is read here, before anything imports the SDKs; imported (by instr_paired), the
# importer sets the environment itself.
VARIANT = sys.argv[1] if __name__ == "__main__" else ""
# Every variant but `native` (and `ours`, which suppresses the SDK's span inside its own) runs with the
# Anthropic SDK's own tracing off, so that a row measures one instrumentation. Must be set before the SDK reads it.
if VARIANT and VARIANT not in ("native", "ours", "ours_metrics", "ours_no_metrics"):
    os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"
if VARIANT == "ours_no_metrics":
    os.environ["OTEL_LLMCOST_METRICS"] = "false"
os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")

from bench import canned  # noqa: E402


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def malloc_probe():
    """Memory figures beyond RSS, for the memory benchmark (glibc and CPython's pymalloc; None elsewhere):
    `live()`, KiB the program holds (pymalloc's allocated blocks plus what glibc malloc has handed out and not had
    back), and `trim()`, which returns glibc's free pages to the system (`malloc_trim(0)`). RSS also counts memory
    the allocators keep after a peak: pymalloc arenas with a block still in use, free glibc chunks."""
    import ctypes
    import re
    import tempfile

    try:
        libc = ctypes.CDLL("libc.so.6")

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                             "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc.mallinfo2.restype = Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None, None

    def pymalloc_bytes() -> int:
        # sys._debugmallocstats() writes to C's stderr: catch it in a file for the one line read.
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+") as out:
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            out.seek(0)
            found = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", out.read())
        return int(found.group(1).replace(",", "")) if found else 0

    def live() -> int:
        info = libc.mallinfo2()
        return (pymalloc_bytes() + info.uordblks + info.hblkhd) // 1024

    def trim() -> None:
        libc.malloc_trim(0)

    return live, trim


def setup_tracing(variant: str):
    """A real TracerProvider with a BatchSpanProcessor in front of an exporter that discards."""
    if variant == "bare":
        return None, None
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        exported = 0

        def export(self, spans):
            Discard.exported += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    if variant == "openlit":
        import openlit

        # openlit reuses a global SDK TracerProvider it finds; its defaults otherwise (message content captured).
        # No metrics or events; its price-list fetch (no network here) happens in init, before timing starts.
        trace.set_tracer_provider(provider)
        # Its price list comes from a local file (the default fetches one from the internet, which is not reached).
        pricing = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openlit_pricing.json")
        openlit.init(disable_metrics=True, disable_events=True, collect_gpu_stats=False, pricing_json=pricing)
        return provider, Discard
    trace.set_tracer_provider(provider)  # what opentelemetry-instrument does; anthropic's native spans use it
    if variant.endswith("metrics"):
        set_meter_provider()
        variant = variant.rsplit("_", 1)[0].removesuffix("_no")
    if variant == "ours":
        from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
        from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        AnthropicInstrumentor().instrument(tracer_provider=provider)
    elif variant == "contrib":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
    elif variant == "openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        AnthropicInstrumentor().instrument(tracer_provider=provider)
    elif variant != "native":
        raise SystemExit(f"unknown variant {variant}")
    return provider, Discard


def set_meter_provider():
    """A global SDK meter provider, as `opentelemetry-instrument` sets one: its reader aggregates every point
    recorded (the periodic export of a real reader is a few times a minute, not per call)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    metrics.set_meter_provider(provider)
    return provider


def make_clients(chunks: int):
    import anthropic
    import httpx2
    import openai

    bodies = {
        ("openai", False): canned.openai_chat(),
        ("openai", True): canned.openai_stream(chunks),
        ("anthropic", False): canned.anthropic_message(),
        ("anthropic", True): canned.anthropic_stream(chunks),
    }

    def handler(request):
        body = request.content
        stream = b'"stream":true' in body or b'"stream": true' in body
        kind = "anthropic" if request.url.path.endswith("/messages") else "openai"
        content_type = "text/event-stream" if stream else "application/json"
        return httpx2.Response(200, headers={"content-type": content_type}, content=bodies[(kind, stream)])

    transport = httpx2.MockTransport(handler)
    oai = openai.OpenAI(api_key="sk-bench", base_url="https://api.openai.com/v1", max_retries=0,
                        http_client=httpx2.Client(transport=transport))
    ant = anthropic.Anthropic(api_key="sk-ant-bench", base_url="https://api.anthropic.com", max_retries=0,
                              http_client=httpx2.Client(transport=transport))
    return oai, ant


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"}]


def scenarios(oai, ant):
    def openai_chat():
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def openai_stream():
        for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                             stream_options={"include_usage": True}):
            pass

    def anthropic_messages():
        ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES[1:])

    def anthropic_stream():
        for _ in ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES[1:], stream=True):
            pass

    return {"openai_chat": openai_chat, "openai_stream": openai_stream,
            "anthropic_messages": anthropic_messages, "anthropic_stream": anthropic_stream}


def time_per_call(fn, n: int, loops: int = 3) -> float:
    """CPU microseconds per call (all threads of the process: the span processor's export thread counts),
    which, unlike wall time, does not count the time the process waits for a core another process holds."""
    for _ in range(max(n // 10, 20)):  # warm-up
        fn()
    results = []
    for _ in range(loops):
        gc.collect()
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        results.append((time.process_time_ns() - start) / n / 1000)
    return statistics.median(results)


def floor(n: int) -> dict:
    """The OpenTelemetry SDK's own price of one span through a BatchSpanProcessor: no SDK call, no instrumentation."""
    from opentelemetry.trace import SpanKind

    provider, exporter = setup_tracing("native")
    tracer = provider.get_tracer("floor")
    attributes = {f"gen_ai.attribute.{i}": (i if i % 2 else f"value-{i}") for i in range(16)}
    out = {
        "floor_16": time_per_call(lambda: tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT,
                                                             attributes=attributes).end(), n * 10),
        "floor_0": time_per_call(lambda: tracer.start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT).end(), n * 10),
    }
    out.update(own_call_cost(tracer, n))
    out.update(telemetry_cost(tracer, n))
    provider.force_flush()
    out.update(stream_event_cost(n))
    return out


def own_call_cost(tracer, n: int) -> dict:
    """Our request wrapper's own CPU per call, beyond the OpenTelemetry span it makes: the wrapper around a
    function returning what a real SDK call's request returned (captured once), against the same span (same name,
    kind and attributes, set at the same moments, its context attached) made by hand around the same function.
    The difference is what our code adds (describing the call, attribution, the prefix fingerprint, reading the
    usage); the span itself is the SDK's price, paid by every instrumentation."""
    import anthropic._base_client
    import openai._base_client
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
    from otel_llmcost.instrumentation.core import RequestTracer
    from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

    class Seen(SpanProcessor):  # the name and attributes of the span ours makes, at its start and at its end
        def on_start(self, span, parent_context=None):
            self.name, self.start = span.name, dict(span.attributes)

        def on_end(self, span):
            self.end = dict(span.attributes)

    seen = Seen()
    seeing = TracerProvider()
    seeing.add_span_processor(seen)
    oai, ant = make_clients(2)  # (plain calls: the stream size does not matter)
    out = {}
    for key, base_client, instrumentor, call in (
        ("own_openai_chat", openai._base_client, OpenAIInstrumentor,
         lambda: oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)),
        ("own_anthropic_messages", anthropic._base_client, AnthropicInstrumentor,
         lambda: ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES[1:])),
    ):
        instance, args, kwargs, result = captured_request(base_client, call)

        def returns(*args, **kwargs):
            return result

        provider = instrumentor().provider()
        RequestTracer(seeing.get_tracer("seen"), provider).sync_wrapper(returns, instance, args, kwargs)
        name, start = seen.name, seen.start
        end = {k: v for k, v in seen.end.items() if k not in start or start[k] != v}
        wrapper = RequestTracer(tracer, provider).sync_wrapper

        def ours():
            wrapper(returns, instance, args, kwargs)

        def by_hand():
            span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=start)
            token = context.attach(trace.set_span_in_context(span))
            returns(*args, **kwargs)
            context.detach(token)
            span.set_attributes(end)
            span.end()

        # Alternated, 7 times: the difference of two figures of about 40 µs each.
        out[key] = statistics.median(time_per_call(ours, n * 5, loops=1) - time_per_call(by_hand, n * 5, loops=1)
                                     for _ in range(7))
        out[key + "_attributes"] = len(seen.end)
    return out


def captured_request(base_client, call):
    """(client, args, kwargs, what it returned) of the SDK's `request` method for one real call."""
    request = base_client.SyncAPIClient.request
    captured = []

    def capture(self, *args, **kwargs):
        result = request(self, *args, **kwargs)
        captured.append((self, args, kwargs, result))
        return result

    base_client.SyncAPIClient.request = capture
    try:
        call()
    finally:
        base_client.SyncAPIClient.request = request
    return captured[0]


def telemetry_cost(tracer, n: int) -> dict:
    """What the conventions' attributes and the GenAI metrics add per call, each alone, through the real tracer
    (a BatchSpanProcessor: the span's price for the extra attributes counts): our request wrapper around a
    function returning a real call's parsed response, with and without them, alternated 7 times.

    - `semconv_*`: the full wrapper against one whose provider reads none of the added attributes (no request
      parameters, no server, no finish reasons), the request carrying typical parameters (temperature, top_p,
      max_tokens, stop, seed); metrics off in both;
    - `metrics_*`: the full wrapper with the metrics recorded into a real SDK meter provider against the same
      wrapper with metrics off."""
    import dataclasses

    import anthropic._base_client
    import openai._base_client

    from otel_llmcost.instrumentation import semconv
    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
    from otel_llmcost.instrumentation.core import RequestTracer, Telemetry
    from otel_llmcost.instrumentation.metrics import GenAIMetrics
    from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

    meter = set_meter_provider().get_meter("bench")
    oai, ant = make_clients(2)
    params = {"temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 1}
    out = {}
    for key, base_client, instrumentor, call in (
        ("openai_chat", openai._base_client, OpenAIInstrumentor,
         lambda: oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=256, **params)),
        ("anthropic_messages", anthropic._base_client, AnthropicInstrumentor,
         lambda: ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES[1:],
                                     stop_sequences=["END"], extra_body={"temperature": 0.2, "top_p": 0.9})),
    ):
        instance, args, kwargs, result = captured_request(base_client, call)
        provider = instrumentor().provider()
        described = provider.describe(None, instance, args, kwargs)
        plain_endpoint = dataclasses.replace(described.endpoint, finish_reasons=None, stream_finish_reasons=None,
                                             output_messages=None)
        plain = dataclasses.replace(provider, describe=lambda *a, d=described._replace(endpoint=plain_endpoint): d,
                                    request_attributes=lambda body: {}, server=None)
        full = dataclasses.replace(provider, describe=lambda *a, d=described: d)

        def returns(*args, **kwargs):
            return result

        def looped(request_tracer):
            wrapper = request_tracer.sync_wrapper
            return lambda: wrapper(returns, instance, args, kwargs)

        off = semconv.Settings(metrics=False)
        with_attributes = looped(RequestTracer(tracer, full, settings=off))
        without = looped(RequestTracer(tracer, plain, settings=off))
        with_metrics = looped(RequestTracer(tracer, full, settings=semconv.Settings(),
                                            telemetry=Telemetry(semconv.Settings(), GenAIMetrics(meter))))
        out["semconv_" + key] = statistics.median(
            time_per_call(with_attributes, n * 5, loops=1) - time_per_call(without, n * 5, loops=1) for _ in range(7))
        out["metrics_" + key] = statistics.median(
            time_per_call(with_metrics, n * 5, loops=1) - time_per_call(with_attributes, n * 5, loops=1)
            for _ in range(7))
    return out


def stream_event_cost(n: int) -> dict:
    """Our stream wrapper alone, per event: the events of a real stream (parsed by the SDK, bare) iterated
    through the wrapper and its reader, against the same events iterated bare; one span ended per pass."""
    from opentelemetry.trace import INVALID_SPAN

    from otel_llmcost.instrumentation import anthropic as ours_anthropic, openai as ours_openai
    from otel_llmcost.instrumentation.core import _Call, _Events, _Observed

    oai, ant = make_clients(100)
    events = {
        "event_openai": (list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                          stream_options={"include_usage": True})),
                         ours_openai.ENDPOINTS["/chat/completions"]),
        "event_anthropic": (list(ant.messages.create(model="claude-sonnet-4-5", max_tokens=256,
                                                     messages=MESSAGES[1:], stream=True)),
                            ours_anthropic.ENDPOINTS["/v1/messages"]),
    }
    out = {}
    for key, (stream, endpoint) in events.items():
        passes = max(n * 10 // len(stream), 10)

        def wrapped():  # the reader as the request wrapper sets it up: watched for the finish reasons
            call = _Call(INVALID_SPAN, endpoint)
            call.reader = _Observed(endpoint.stream_reader(), endpoint.stream_finish_reasons)
            for _ in _Events(iter(stream), call):
                pass

        def bare():
            for _ in iter(stream):
                pass

        out[key] = (time_per_call(wrapped, passes) - time_per_call(bare, passes)) / len(stream)
    return out


def main() -> None:
    n_plain, n_stream, small, large = (int(x) for x in sys.argv[2:6])
    if VARIANT == "floor":
        print(json.dumps({"variant": "floor", **floor(n_plain)}), flush=True)
        return
    provider, exporter = setup_tracing(VARIANT)
    out: dict = {"variant": VARIANT}
    if len(sys.argv) > 6 and sys.argv[6] == "memory":
        calls = int(sys.argv[7])
        oai, ant = make_clients(small)
        fns = list(scenarios(oai, ant).values())
        samples, trimmed, live_kib, queued = {}, {}, {}, {}
        marks = {calls // 10, calls // 4, calls // 2, 3 * calls // 4, calls}
        live, trim = malloc_probe()
        # The BatchSpanProcessor's queue (private: None if another SDK version moved it): its deepest point so far.
        # Spans pile up there when the export thread waits for a core or the GIL (up to 2,048, then dropped), and
        # the allocators keep the memory of the deepest pile after it is exported: RSS steps up, bounded.
        queue = None
        if provider is not None:
            for processor in getattr(provider._active_span_processor, "_span_processors", ()):
                queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
        deepest = 0
        for i in range(1, calls + 1):
            fns[i % 4]()
            if queue is not None and len(queue) > deepest:
                deepest = len(queue)
            if i in marks or i == 1000:
                if provider is not None:
                    provider.force_flush()  # spans waiting in the processor's queue are not a leak
                gc.collect()
                samples[i] = rss_kib()
                if live is not None:
                    live_kib[i] = live()
                    trim()  # then RSS once glibc has returned its free pages (later samples follow this trim too)
                    trimmed[i] = rss_kib()
                if queue is not None:
                    queued[i] = deepest
        out["rss_kib"] = samples
        out["rss_trimmed_kib"] = trimmed
        out["live_kib"] = live_kib
        out["queued_peak"] = queued
    else:
        for chunks, names in ((small, None), (large, ("openai_stream", "anthropic_stream"))):
            oai, ant = make_clients(chunks)
            for name, fn in scenarios(oai, ant).items():
                if names is not None and name not in names:
                    continue
                stream = name.endswith("stream")
                key = f"{name}_{chunks}" if stream else name
                out[key] = time_per_call(fn, n_stream if stream else n_plain)
    if provider is not None:
        provider.force_flush()
        out["spans_exported"] = exporter.exported
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
