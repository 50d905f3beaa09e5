"""Collector throughput: OTLP receipt -> rows queryable in the embedded store.

The collector runs as it does in production (`python -m otel_llmcost.cli collector --store chdb:///...`,
a subprocess); the load generator is this process, with the real OTLP exporters (HTTP/protobuf and gRPC),
sending batches of 512 ReadableSpans (12 gen_ai attributes each) built once and re-sent with fresh trace
and span ids, from 2 threads so that the collector always has a request to work on. Measured:
- spans/s: all spans of the run over the wall time from the first export to the last row stored;
- collector CPU seconds per 10k spans (utime+stime of the collector process, /proc/<pid>/stat) and the
  spans per CPU-second that follow (what one core would do, whatever the load generator costs);
- peak RSS of the collector (VmHWM);
- end-to-end latency, sampled: span end (stamped just before export) -> its row returned by a query.
Throughput and CPU come from rounds without the latency probe: its queries run in the collector (a scan of
`llm_spans` every 20 ms, several ms of collector CPU each, more the longer a round takes), so they would be
counted as ingest CPU. Latency comes from rounds of the same size with the probe, interleaved with them.
While a round runs, the end is detected through the collector's stats endpoint (counters, no query); the
stored rows are then counted once by a query.

Capacity on one core (the second table): the collector pinned to core 0 (all its threads: receivers, loader,
chDB's inserts and merges), the load generator to core 1, sending faster than the collector can store: 4 threads,
the same exporters, but each request's OTLP message made before the clock starts (the exporters' Python
encoding, about 40 µs a span, would otherwise cap the load below what the collector takes). spans/s = the
round's spans over the wall time from the first export to the last row stored; steady = the rate rows were stored
from 10 % to 90 % of a round, without its start and its last, partial batch waiting for the loader's 1 s timer.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from .common import ROOT, log, median, percentile, table

BATCH = 512
_SEEDS = itertools.count(1000)  # every worker its own ids: a re-sent id would be dropped as a duplicate
TICKS = os.sysconf("SC_CLK_TCK")

MODELS = [  # (provider, request model, response model, weight)
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 40),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", 15),
    ("openai", "o3-mini", "o3-mini-2025-01-31", 5),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 25),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku-20241022", 10),
    ("gcp.gemini", "gemini-2.5-pro", "gemini-2.5-pro", 5),
]


def free_port() -> int:
    """A free port below the kernel's ephemeral range, where no outgoing connection can take it before the
    collector binds it."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class CollectorProcess:
    def __init__(self, store_dir: Path, cpus: set[int] | None = None, env: dict[str, str] | None = None) -> None:
        self.store_dir = store_dir
        self.env = env or {}
        self.cpus = cpus  # the cores the collector (every thread it starts) may run on; None: any
        self.http_port, self.grpc_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.http_port}"
        self.log_path = store_dir.parent / f"{store_dir.name}.log"

    def start(self) -> "CollectorProcess":
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_llmcost.cli", "collector", "--store", f"chdb://{self.store_dir}",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "OTEL_LLMCOST_LOG_LEVEL": "WARNING", **self.env},
            preexec_fn=None if self.cpus is None else lambda: os.sched_setaffinity(0, self.cpus),
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited early: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.endpoint + "/llmcost/v1/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("collector did not start")

    def stats(self) -> dict:
        import json

        with urllib.request.urlopen(self.endpoint + "/llmcost/v1/stats", timeout=10) as response:
            return json.loads(response.read())

    def query(self, sql: str) -> list:
        from otel_llmcost.store import RemoteStore

        return RemoteStore(f"chdb://{self.store_dir}", self.endpoint).query(sql).rows

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def build_batch(rng: random.Random):
    """512 ReadableSpans of LLM calls, 12 gen_ai/attribution attributes each."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    resource = Resource.create({"service.name": "bench-app", "service.version": "1.0", "deployment.environment": "bench"})
    scope = InstrumentationScope("otel_llmcost", "0.1.0")
    weights = [m[3] for m in MODELS]
    now = time.time_ns()
    spans = []
    for i in range(BATCH):
        provider, request_model, response_model, _ = rng.choices(MODELS, weights)[0]
        input_tokens = rng.randint(50, 20000)
        attributes = {
            "gen_ai.provider.name": provider,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request_model,
            "gen_ai.response.model": response_model,
            "gen_ai.response.id": f"resp_{i:06d}",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": rng.randint(10, 2000),
            "gen_ai.usage.cache_read.input_tokens": rng.choice([0, 0, input_tokens // 2]),
            "gen_ai.usage.reasoning.output_tokens": rng.choice([0, 0, 0, 128]),
            "llmcost.project": rng.choice(["checkout", "search", "support", "internal"]),
            "llmcost.feature": rng.choice(["summarize", "classify", "chat", "extract", "rerank"]),
            "user.id": f"user-{rng.randint(1, 5000)}",
        }
        context = SpanContext(rng.getrandbits(128), rng.getrandbits(64), False, TraceFlags(1))
        spans.append(ReadableSpan(
            name=f"chat {request_model}", context=context, parent=None, resource=resource,
            attributes=attributes, kind=SpanKind.CLIENT, start_time=now - 900_000_000, end_time=now,
            instrumentation_scope=scope,
        ))
    return spans


def refresh(spans, rng: random.Random, end_ns: int | None = None) -> None:
    """Fresh trace and span ids (and, when given, a fresh end time) for a batch about to be re-sent."""
    from opentelemetry.trace import SpanContext, TraceFlags

    for span in spans:
        span._context = SpanContext(rng.getrandbits(128), rng.getrandbits(64), False, TraceFlags(1))  # noqa: SLF001
        if end_ns is not None:
            span._end_time = end_ns  # noqa: SLF001
            span._start_time = end_ns - 900_000_000  # noqa: SLF001


def make_exporter(protocol: str, collector: CollectorProcess):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=f"{collector.endpoint}/v1/traces", timeout=60)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True, timeout=60)


def load(protocol: str, collector: CollectorProcess, batches: int, threads: int = 2, probe: bool = True) -> dict:
    """Sends `batches` batches from `threads` threads; returns throughput, CPU, RSS and latency figures
    (latency only with `probe`)."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    before = collector.query("SELECT count() FROM llm_spans")[0][0]
    stored_before = collector.stats()["spans_stored"]
    per_thread = [batches // threads + (1 if i < batches % threads else 0) for i in range(threads)]
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    every = max(2, min(10, per_thread[0] // 3))
    pending: list[tuple[str, int]] = []  # (span id, end ns) of sampled spans not yet seen in the store
    done = threading.Event()

    def worker(index: int, count: int) -> None:
        rng = random.Random(next(_SEEDS))
        spans = build_batch(rng)
        exporter = make_exporter(protocol, collector)
        try:
            for b in range(count):
                sample = probe and b % every == every // 2
                end_ns = time.time_ns() if sample else None
                refresh(spans, rng, end_ns)
                if exporter.export(spans) != SpanExportResult.SUCCESS:
                    with lock:
                        failures[0] += 1
                elif sample:
                    with lock:
                        pending.append((format(spans[-1].context.span_id, "016x"), end_ns))
        finally:
            exporter.shutdown()

    def probe_loop() -> None:
        """Polls for the sampled spans' rows (every 20 ms, one query for all pending) while the load runs."""
        give_up = None
        while True:
            with lock:
                waiting = list(pending)
            if not waiting:
                if done.is_set():
                    return
                time.sleep(0.02)
                continue
            ids = ",".join(f"'{sid}'" for sid, _ in waiting)
            seen = {r[0] for r in collector.query(f"SELECT span_id FROM llm_spans WHERE span_id IN ({ids})")}
            now = time.time_ns()
            with lock:
                for sid, end_ns in waiting:
                    if sid in seen:
                        latencies.append((now - end_ns) / 1e6)
                        pending.remove((sid, end_ns))
            if done.is_set():
                give_up = give_up or time.monotonic() + 60
                if time.monotonic() > give_up:
                    log(f"collector: {len(pending)} sampled spans not visible 60 s after the load")
                    return
            time.sleep(0.02)

    pid = collector.process.pid
    cpu0 = proc_cpu_seconds(pid)
    gen0 = time.process_time()
    t0 = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(per_thread)]
    prober = threading.Thread(target=probe_loop)
    for t in pool + ([prober] if probe else []):
        t.start()
    for t in pool:
        t.join()
    done.set()
    expected = stored_before + (batches - failures[0]) * BATCH
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if collector.stats()["spans_stored"] >= expected:  # (counters only: no query in the collector)
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    cpu = proc_cpu_seconds(pid) - cpu0
    generator_cpu = time.process_time() - gen0
    if probe:
        prober.join()
    spans = collector.query("SELECT count() FROM llm_spans")[0][0] - before  # the rows, as a query sees them
    return {
        "spans": spans, "failed_batches": failures[0], "wall": wall, "spans_per_s": spans / wall if wall else 0,
        "cpu": cpu, "cpu_per_10k": cpu / spans * 10_000 if spans else float("nan"),
        "spans_per_cpu_s": spans / cpu if cpu else float("nan"),
        "generator_cpu_per_10k": generator_cpu / spans * 10_000 if spans else float("nan"),
        "latencies": latencies, "rss_peak_mib": proc_status_kib(pid, "VmHWM") / 1024,
    }


class Encoded(list):
    """A batch (to an exporter, an empty sequence of spans) whose OTLP message was made before the clock."""

    def __init__(self, message) -> None:
        super().__init__()
        self.message = message


@contextlib.contextmanager
def pre_encoded():
    """The OTLP exporters send an `Encoded` batch's message as it is (both call the module's `encode_spans`)."""
    import opentelemetry.exporter.otlp.proto.grpc.trace_exporter as grpc_exporter
    import opentelemetry.exporter.otlp.proto.http.trace_exporter as http_exporter
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode

    modules = (grpc_exporter, http_exporter)
    originals = [module.encode_spans for module in modules]

    def encode_spans(spans):
        return spans.message if isinstance(spans, Encoded) else encode(spans)

    for module in modules:
        module.encode_spans = encode_spans
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.encode_spans = original


def encoded_batches(template, count: int, rng: random.Random, spans_per_s: float = 30_000) -> list[Encoded]:
    """`count` copies of an encoded batch, each span with fresh trace and span ids, and times as an application
    sending `spans_per_s` from now on would give them (the collector looks up stored spans around a batch's span
    times: spans that all started at one instant would make every look-up read every row stored)."""
    batches = []
    start = time.time_ns()
    for n in range(count):
        begin = start + int(n * BATCH / spans_per_s * 1e9)
        message = type(template)()
        message.CopyFrom(template)
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.trace_id = rng.randbytes(16)
                    span.span_id = rng.randbytes(8)
                    span.start_time_unix_nano = begin
                    span.end_time_unix_nano = begin + 900_000_000
        batches.append(Encoded(message))
    return batches


def flood(protocol: str, collector: CollectorProcess, batches: list[Encoded], threads: int = 4) -> dict:
    """Sends every batch as fast as the exporters go; returns when the last row is stored. `steady_per_s`: the
    rate rows were stored between 10 % and 90 % of the round (sampled every 50 ms), without the start (the first
    batch filling) and the end (the last, partial batch waiting for the loader's 1 s timer)."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    stored_before = collector.stats()["spans_stored"]
    failures = [0]

    def worker(index: int) -> None:
        exporter = make_exporter(protocol, collector)
        try:
            for batch in batches[index::threads]:
                if exporter.export(batch) != SpanExportResult.SUCCESS:
                    failures[0] += 1
        finally:
            exporter.shutdown()

    samples: list[tuple[float, int]] = []  # (time, rows stored in this round)
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), collector.stats()["spans_stored"] - stored_before))
            done.wait(0.05)

    pid = collector.process.pid
    cpu0 = proc_cpu_seconds(pid)
    t0 = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)] + [threading.Thread(target=sampler)]
    for t in pool:
        t.start()
    for t in pool[:-1]:
        t.join()
    received = time.monotonic() - t0
    spans = (len(batches) - failures[0]) * BATCH
    deadline = time.monotonic() + 300
    while (now_stored := collector.stats()["spans_stored"]) < stored_before + spans and time.monotonic() < deadline:
        time.sleep(0.01)
    wall = time.monotonic() - t0
    # (the insert that stored the last rows is a sample too: when it alone crosses 90 %, the sampler may have
    # stopped before seeing it)
    samples.append((time.monotonic(), now_stored - stored_before))
    cpu = proc_cpu_seconds(pid) - cpu0
    done.set()
    pool[-1].join()
    stored = collector.stats()["spans_stored"] - stored_before
    samples.sort()
    low = next((x for x in samples if x[1] >= 0.1 * spans), None)
    high = next((x for x in samples if x[1] >= 0.9 * spans), None)
    steady = (high[1] - low[1]) / (high[0] - low[0]) if low and high and high[0] > low[0] else float("nan")
    return {"spans": stored, "wall": wall, "cpu": cpu, "received_per_s": spans / received, "steady_per_s": steady,
            "failed_batches": failures[0]}


def rate_range(values: list[float]) -> str:
    """Median (min…max) of the rounds' rates that could be measured (a round stored in one insert has none)."""
    known = [v for v in values if v == v]  # (not NaN)
    return f"{median(known):,.0f} ({min(known):,.0f}…{max(known):,.0f})" if known else "n/a"


# The capacity rounds run two collectors side by side, interleaved round by round: as shipped, and with the
# batch not settled against the store (the bench hook in collector/pipeline.py), so that the cost of exact totals
# is measured on the same host at the same time.
VARIANTS = {"as shipped": {}, "without store look-ups": {"OTEL_LLMCOST_BENCH_SKIP_SETTLE": "1"}}


def capacity(rounds: int, quick: bool) -> str:
    """What one core stores: the collector on core 0, the load generator on core 1, the collector saturated."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return "Capacity on one core: not measured (it needs two cores to pin the collector and the load apart)."
    cores = sorted(os.sched_getaffinity(0))
    batches = 8 if quick else 600  # (about 10 s a round: merges of earlier rounds fall in later ones)
    protocols = ("http", "grpc")
    rng = random.Random(11)
    template = encode_spans(build_batch(rng))
    results: dict[tuple[str, str], list[dict]] = {(v, p): [] for v in VARIANTS for p in protocols}
    base = Path(tempfile.mkdtemp(prefix="llmcost-bench-capacity-"))
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[1]})  # this thread, and the exporters' threads it starts
    collectors: dict[str, CollectorProcess] = {}
    rss: dict[str, float] = {}
    try:
        for n, (variant, env) in enumerate(VARIANTS.items()):
            collectors[variant] = CollectorProcess(base / f"store{n}", cpus={cores[0]}, env=env).start()
        with pre_encoded():
            for collector in collectors.values():
                for protocol in protocols:  # warm-up
                    flood(protocol, collector, encoded_batches(template, 4, rng))
            for r in range(rounds):
                for protocol in protocols:
                    for variant, collector in collectors.items():
                        log(f"collector capacity round {r + 1}/{rounds}: {variant}, {protocol}, {batches} x {BATCH} spans")
                        load_batches = encoded_batches(template, batches, rng)
                        results[(variant, protocol)].append(flood(protocol, collector, load_batches))
        rss = {v: proc_status_kib(c.process.pid, "VmHWM") / 1024 for v, c in collectors.items()}
    finally:
        for collector in collectors.values():
            collector.stop()
        os.sched_setaffinity(0, saved)
        shutil.rmtree(base, ignore_errors=True)
    rows = []
    summary = []
    for variant in VARIANTS:
        for protocol in protocols:
            rs = results[(variant, protocol)]
            rate = [r["spans"] / r["wall"] for r in rs]
            per_cpu = [r["spans"] / r["cpu"] for r in rs]
            rows.append([
                variant, {"http": "OTLP/HTTP protobuf", "grpc": "OTLP/gRPC"}[protocol],
                f"{sum(r['spans'] for r in rs) / sum(r['wall'] for r in rs):,.0f} ({min(rate):,.0f}…{max(rate):,.0f})",
                rate_range([r["steady_per_s"] for r in rs]),
                f"{median(r['cpu'] / r['wall'] for r in rs):.2f}",
                f"{sum(r['spans'] for r in rs) / sum(r['cpu'] for r in rs):,.0f} ({min(per_cpu):,.0f}…{max(per_cpu):,.0f})",
                f"{median(r['received_per_s'] for r in rs):,.0f}",
                f"{sum(r['failed_batches'] for r in rs)}",
            ])
        every = [r for protocol in protocols for r in results[(variant, protocol)]]
        pooled = sum(r["spans"] for r in every) / sum(r["wall"] for r in every)
        steady = rate_range([r["steady_per_s"] for r in every]).split(" (")[0]
        summary.append(f"{variant}: {pooled:,.0f} spans/s stored by a collector on one core, first export to last row; {steady} "
                       f"spans/s in the steady part of a round (median of rounds); peak RSS {rss.get(variant, 0):,.0f} MiB")
    header = ["collector", "protocol", "spans/s stored on one core, all rounds (min…max of rounds)",
              "steady: 10 % → 90 % of a round stored, spans/s (median; min…max)", "collector cores used",
              "spans per collector CPU-second (min…max)", "spans/s received and spooled (median)", "failed batches"]
    notes = (f"\n\n**Both protocols, all rounds: " + "; ".join(summary) + ".**\n\n"
             f"Capacity on one core: each collector pinned to core {cores[0]} (every thread: receivers, loader, chDB's "
             f"inserts and background merges), the load generator to core {cores[1]}; two collectors, each with its "
             f"own store, side by side (as shipped, and without settling each batch against the store: the bench "
             f"hook `OTEL_LLMCOST_BENCH_SKIP_SETTLE`), their rounds interleaved; {rounds} round(s) of "
             f"{batches} batches × {BATCH} spans per protocol and collector, from 4 exporter threads (the real OTLP "
             f"exporters, each request's message encoded before the clock, span times as an application sending "
             f"30,000 spans/s would give them), so the collector always has a backlog; "
             f"spans/s = spans of the rounds over their wall time, first export to last row stored (which counts the last, "
             f"partial batch, inserted once the loader has caught up); steady = the rate rows were stored from 10 % to 90 % of "
             f"a round (the collector's stats sampled every 50 ms). Received and "
             f"spooled: the rate the exporters' requests were answered (durably spooled) meanwhile.")
    return table(header, rows) + notes


def run(rounds: int = 5, quick: bool = False) -> str:
    batches = 4 if quick else 100  # (about 4 s a round: long enough for the merges it causes to fall in it)
    rounds = 1 if quick else max(1, rounds)
    protocols = ("http", "grpc")
    results: dict[str, list[dict]] = {p: [] for p in protocols}
    latency_results: dict[str, list[dict]] = {p: [] for p in protocols}
    base = Path(tempfile.mkdtemp(prefix="llmcost-bench-collector-"))
    collector = CollectorProcess(base / "store").start()
    try:
        for protocol in protocols:  # warm-up: connections, price look-ups, first parts
            load(protocol, collector, 2)
        for r in range(rounds):
            for protocol in protocols:
                log(f"collector round {r + 1}/{rounds}: {protocol}, {batches} x {BATCH} spans")
                results[protocol].append(load(protocol, collector, batches, probe=False))
                latency_results[protocol].append(load(protocol, collector, batches, probe=True))
        rss = proc_status_kib(collector.process.pid, "VmHWM") / 1024
    finally:
        collector.stop()
        shutil.rmtree(base, ignore_errors=True)
    rows = []
    for protocol in protocols:
        rs = results[protocol]
        lat = [x for r in latency_results[protocol] for x in r["latencies"]]
        rows.append([
            {"http": "OTLP/HTTP protobuf", "grpc": "OTLP/gRPC"}[protocol],
            f"{median(r['spans_per_s'] for r in rs):,.0f} ({min(r['spans_per_s'] for r in rs):,.0f}…{max(r['spans_per_s'] for r in rs):,.0f})",
            f"{median(r['cpu_per_10k'] for r in rs):.3f}",
            f"{median(r['spans_per_cpu_s'] for r in rs):,.0f} ({min(r['spans_per_cpu_s'] for r in rs):,.0f}…"
            f"{max(r['spans_per_cpu_s'] for r in rs):,.0f})",
            f"{percentile(lat, 0.5):.0f} / {percentile(lat, 0.95):.0f} / {max(lat) if lat else float('nan'):.0f} (n={len(lat)})",
            f"{median(r['generator_cpu_per_10k'] for r in rs):.2f}",
            f"{sum(r['failed_batches'] for r in rs)}",
        ])
    # Background merges run when the engine picks, often in a later round (of either protocol): the steady cost
    # is all rounds of both protocols together, heavy-merge rounds counted as much as the others.
    every = [r for protocol in protocols for r in results[protocol]]
    pooled = sum(r["spans"] for r in every) / sum(r["cpu"] for r in every)
    header = ["protocol", "spans/s end to end (min…max)", "collector CPU s per 10k spans",
              "spans per collector CPU-second (min…max of rounds)", "latency span end → row visible, ms p50 / p95 / max", "load generator CPU s per 10k spans", "failed batches"]
    notes = (f"\n\n**All rounds of both protocols together: {pooled:,.0f} spans per collector CPU-second** "
             f"({10_000 / pooled:.3f} CPU s per 10k spans), background merges included wherever they fell; the "
             f"table's CPU figures are medians of rounds.\n\n"
             f"Embedded store (chDB), one collector process; {rounds} round(s) of {batches} batches × {BATCH} "
             f"spans per protocol, interleaved, from 2 exporter threads in one load-generator process (which "
             f"competes for the same 2 cores). Peak RSS of the collector over the whole run: {rss:,.0f} MiB. "
             f"Throughput and CPU from rounds without the latency probe (its queries run in the collector and "
             f"would count as ingest CPU); latency from as many rounds of the same size with it, interleaved. "
             f"Latency sampled on every 10th batch of each thread (every 2nd with --quick), polled every 20 ms by a probe thread: the batch's spans end just before the export; "
             f"visible = a query through the collector's query endpoint returns the last span's row. "
             f"ClickHouse-server backend: not measured (no modern ClickHouse server can be had on this machine: "
             f"no network, and Debian's clickhouse-server is 18.x).")
    return table(header, rows) + notes + "\n\n" + capacity(rounds, quick)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
