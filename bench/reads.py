"""Reads and the network surface of a real collector process (`python -m bench reads`).

- Storage delay: a request of 512 LLM spans is posted and the time until its spans are visible in `llm_spans`
  (polled every 20 ms through the query endpoint) is taken, first with the collector otherwise idle, then
  while a user query runs until its time limit (16 s: `OTEL_LLMCOST_QUERY_SECONDS=16`) in another connection.
  The collector's default batch timer (1 s) is most of the idle delay.
- Connections: 800 idle TCP connections to the OTLP/HTTP port, then the collector's thread count.
- Zip bombs: 16 gzip requests at once, each 65 kB inflating to 64 MiB plus one byte (just past the default
  request limit), then the growth of the collector's peak RSS.
"""

from __future__ import annotations

import gzip
import os
import random
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .collector import CollectorProcess, build_batch, proc_status_kib, refresh
from .common import log, median, table

LONG_QUERY_SECONDS = 16
LONG_QUERY = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"


def post(endpoint: str, body: bytes, encoding: str | None = None) -> int:
    headers = {"Content-Type": "application/x-protobuf", **({"Content-Encoding": encoding} if encoding else {})}
    request = urllib.request.Request(endpoint + "/v1/traces", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def storage_delay(collector: CollectorProcess, spans, rng: random.Random) -> float:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    refresh(spans, rng)
    ids = ",".join(f"'{span.context.span_id:016x}'" for span in spans[:8])
    started = time.monotonic()
    assert post(collector.endpoint, encode_spans(spans).SerializeToString()) == 200
    while collector.query(f"SELECT count() FROM llm_spans WHERE span_id IN ({ids})")[0][0] < 8:
        time.sleep(0.02)
    return time.monotonic() - started


def run(rounds: int = 5, quick: bool = False) -> str:
    os.environ["OTEL_LLMCOST_QUERY_SECONDS"] = str(LONG_QUERY_SECONDS)
    os.environ["OTEL_LLMCOST_CLICKHOUSE_PORT"] = "0"
    rng = random.Random(7)
    spans = build_batch(rng)
    probes = 3 if quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        collector = CollectorProcess(Path(tmp) / "store").start()
        try:
            idle = [storage_delay(collector, spans, rng) for _ in range(probes)]
            log(f"reads: idle storage delay {median(idle):.2f} s")
            outcome: dict = {}

            def long_query() -> None:
                started = time.monotonic()
                try:
                    collector.query(LONG_QUERY)
                except Exception as exc:  # the time limit ends it
                    outcome["error"] = str(exc)[:80]
                outcome["seconds"] = time.monotonic() - started

            worker = threading.Thread(target=long_query)
            worker.start()
            time.sleep(0.5)
            during = []
            while worker.is_alive():
                during.append(storage_delay(collector, spans, rng))
                time.sleep(0.5)
            worker.join()
            log(f"reads: long query {outcome}; storage delay during it {during}")

            threads_before = proc_status_kib(collector.process.pid, "Threads")
            sockets = [socket.create_connection(("127.0.0.1", collector.http_port), timeout=10) for _ in range(800)]
            time.sleep(1)
            threads_idle = proc_status_kib(collector.process.pid, "Threads")
            for sock in sockets:
                sock.close()

            bomb = gzip.compress(bytes((64 << 20) + 1))
            peak_before = proc_status_kib(collector.process.pid, "VmHWM")
            statuses: list[int] = []
            senders = [threading.Thread(target=lambda: statuses.append(post(collector.endpoint, bomb, "gzip")))
                       for _ in range(16)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            peak_after = proc_status_kib(collector.process.pid, "VmHWM")
        finally:
            collector.stop()
    rows = [
        ["storage delay, collector otherwise idle (median, max)", f"{median(idle):.2f} s, {max(idle):.2f} s"],
        [f"storage delay while a {LONG_QUERY_SECONDS} s query runs (median, max; {len(during)} probes)",
         f"{median(during):.2f} s, {max(during):.2f} s" if during else "n/a"],
        ["the long query ended after", f"{outcome.get('seconds', 0):.1f} s ("
         f"{'its time limit' if 'Timeout exceeded' in outcome.get('error', '') else outcome.get('error', 'finished')})"],
        ["threads: before, with 800 idle connections", f"{threads_before}, {threads_idle}"],
        [f"16 zip bombs ({len(bomb) // 1024} kB each): answers, peak RSS growth",
         f"{sorted(set(statuses))}, {(peak_after - peak_before) / 1024:.0f} MiB"],
    ]
    return table(["measure", "value"], rows)
