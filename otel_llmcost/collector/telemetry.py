"""The collector reports on itself: OpenTelemetry metrics (when an OTLP metrics endpoint is configured with the
standard environment variables) and a periodic one-line summary in its log. Both read the same counters as
`GET /llmcost/v1/stats`; nothing here runs per span.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

logger = logging.getLogger("otel_llmcost.collector")

# counter name in Stats -> (metric name, unit, description)
COUNTERS = {
    "spans_received": ("llmcost.collector.spans.received", "{span}", "spans accepted (all, LLM or not)"),
    "spans_rejected": ("llmcost.collector.spans.rejected", "{span}", "spans rejected as invalid (partial success)"),
    "requests_spooled": ("llmcost.collector.requests.spooled", "{request}", "export requests written to the spool"),
    "requests_rejected_full": ("llmcost.collector.requests.refused", "{request}",
                               "export requests refused with 429/503 because the spool was full"),
    "llm_spans": ("llmcost.collector.spans.llm", "{span}", "LLM calls found in the accepted spans"),
    "spans_priced": ("llmcost.collector.spans.priced", "{span}", "LLM calls priced"),
    "spans_unpriced": ("llmcost.collector.spans.unpriced", "{span}", "LLM calls with usage but no price"),
    "spans_duplicate": ("llmcost.collector.spans.duplicate", "{span}", "re-sent LLM calls skipped"),
    "spans_stored": ("llmcost.collector.spans.stored", "{span}", "rows inserted into llm_spans"),
    "insert_errors": ("llmcost.collector.insert.errors", "{error}", "failed store inserts (retried)"),
    "forward_dropped": ("llmcost.collector.forward.dropped", "{request}", "requests not forwarded (queue full)"),
    "spans_dead_lettered": ("llmcost.collector.spans.dead_lettered", "{span}",
                            "LLM spans set aside in llm_dead_letters instead of stored"),
    "loader_restarts": ("llmcost.collector.loader.restarts", "{restart}", "loader restarts after an unexpected error"),
    "spool_write_errors": ("llmcost.collector.spool.write_errors", "{error}", "failed spool writes (retried)"),
}


def metrics_enabled(environ=os.environ) -> bool:
    if environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Telemetry:
    def __init__(self, stats, gauges: Callable[[], dict[str, Any]], log_seconds: float = 60.0) -> None:
        self.stats = stats
        self.gauges = gauges  # spool backlog, forward queue depth, ...: read when reported
        self.log_seconds = log_seconds
        self.provider = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._log_loop, name="llmcost-stats-log", daemon=True)
        if metrics_enabled():
            self._start_metrics()

    def _start_metrics(self) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "otel-llmcost-collector")})
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        self.provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self.provider.get_meter("otel_llmcost.collector")

        def counter_callback(key: str):
            def callback(options: CallbackOptions):
                yield Observation(self.stats.snapshot()[key])
            return callback

        for key, (name, unit, description) in COUNTERS.items():
            meter.create_observable_counter(name, [counter_callback(key)], unit=unit, description=description)

        def gauge_callback(key: str):
            def callback(options: CallbackOptions):
                yield Observation(self.gauges().get(key, 0))
            return callback

        meter.create_observable_gauge("llmcost.collector.spool.backlog", [gauge_callback("spool_backlog_bytes")],
                                      unit="By", description="accepted bytes not yet in the store")
        meter.create_observable_gauge("llmcost.collector.queue.depth", [gauge_callback("queue_depth")],
                                      unit="{request}", description="spooled requests not yet loaded into the store")
        meter.create_observable_gauge("llmcost.collector.store.down", [gauge_callback("store_down")],
                                      unit="1", description="1 while the store refuses writes")
        histogram = meter.create_histogram("llmcost.collector.insert.duration", unit="ms",
                                           description="time of one batch insert into the store")
        self.stats.insert_latency_listeners.append(histogram.record)
        logger.info("reporting collector metrics over OTLP (%s)", protocol)

    def start(self) -> "Telemetry":
        if self.log_seconds > 0:
            self._thread.start()
        return self

    def summary(self) -> str:
        s = {**self.stats.snapshot(), **self.gauges()}
        batches = s["insert_batches"]
        avg = s["insert_latency_ms_total"] / batches if batches else 0.0
        return (f"stats: received {s['spans_received']} spans ({s['spans_rejected']} rejected), "
                f"llm {s['llm_spans']} (priced {s['spans_priced']}, unpriced {s['spans_unpriced']}, "
                f"no usage {s['spans_no_usage']}, duplicate {s['spans_duplicate']}), stored {s['spans_stored']}, "
                f"dead letters {s['spans_dead_lettered']}, loader restarts {s['loader_restarts']}, "
                f"{batches} inserts (avg {avg:.1f} ms, max {s['insert_latency_ms_max']:.1f} ms), "
                f"spool backlog {s['spool_backlog_bytes']} bytes / {s['queue_depth']} requests, "
                f"refused {s['requests_rejected_full']} requests, store {'DOWN' if s['store_down'] else 'up'}")

    def _log_loop(self) -> None:
        last = None
        while not self._stop.wait(self.log_seconds):
            line = self.summary()
            if line != last:  # quiet when nothing happens
                logger.info("%s", line)
                last = line

    def stop(self) -> None:
        self._stop.set()
        if self.provider is not None:
            try:
                self.provider.shutdown()
            except Exception:  # exporting our own metrics must never fail a shutdown
                logger.debug("metrics shutdown failed", exc_info=True)
