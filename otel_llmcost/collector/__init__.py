"""The collector: receive OTLP -> normalize to LLM calls -> price -> write to ClickHouse."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path

from ..store import ENDPOINT_FILE, Store, chdb_dir
from .pipeline import Pipeline
from .receivers import Receivers

logger = logging.getLogger("otel_llmcost.collector")


class Collector:
    """A running collector: the store, the pipeline and both receivers."""

    def __init__(self, store_url: str | None = None, host: str = "127.0.0.1", http_port: int = 4318,
                 grpc_port: int = 4317, auth_token: str | None = None) -> None:
        self.store = Store(store_url)
        self.store.migrate()
        self.pipeline = Pipeline(self.store)
        self.receivers = Receivers(self.pipeline, host, http_port, grpc_port, auth_token)
        self.host = host
        directory = chdb_dir(self.store.url)
        self.endpoint_file = directory / ENDPOINT_FILE if directory is not None else None

    @property
    def http_endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.receivers.http_port}"

    def start(self) -> "Collector":
        self.receivers.start()
        if self.endpoint_file is not None:
            # Other processes (the CLI) cannot open the embedded store while we hold it: tell them where we are.
            info = {"endpoint": self.http_endpoint, "pid": os.getpid()}
            tmp = self.endpoint_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(self.endpoint_file)
        logger.info("collector listening: OTLP/HTTP %s, OTLP/gRPC %s:%d, store %s",
                    self.http_endpoint, self.host, self.receivers.grpc_port, self.store.url)
        return self

    def stop(self) -> None:
        self.receivers.stop()
        if self.endpoint_file is not None:
            try:
                self.endpoint_file.unlink()
            except FileNotFoundError:
                pass
        self.store.close()


def run(store_url: str | None, host: str, http_port: int, grpc_port: int, auth_token: str | None) -> None:
    """Runs until SIGTERM or SIGINT, then stops cleanly (stored spans are already durable)."""
    collector = Collector(store_url, host, http_port, grpc_port, auth_token).start()
    print(f"otel-llmcost collector: OTLP/HTTP {collector.http_endpoint}/v1/traces, "
          f"OTLP/gRPC {host}:{collector.receivers.grpc_port}, store {collector.store.url}", flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        pass
    collector.stop()
    print("otel-llmcost collector: stopped", flush=True)
