"""Shared fixtures: an instrumented tracer provider with an in-memory exporter, and real collector processes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_llmcost.store import RemoteStore, Store

ROOT = Path(__file__).resolve().parents[1]

# The replay servers and the sandbox on 127.0.0.1 stand in for the hosted APIs: their calls keep the provider
# the SDK or span names (without this, loopback means a self-hosted model, priced only by a price file). Set
# here, before any test runs, so that the collector processes and instrumented apps the tests start inherit it.
os.environ.setdefault("OTEL_LLMCOST_PROVIDER_HOSTS", "127.0.0.1=hosted,localhost=hosted")


@pytest.fixture(scope="session")
def tracing():
    """(tracer_provider, exporter) with both instrumentors on; each test starts with no spans."""
    from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
    from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)
    yield provider, exporter
    OpenAIInstrumentor().uninstrument()
    AnthropicInstrumentor().uninstrument()


@pytest.fixture
def spans(tracing):
    """The in-memory exporter, emptied; `spans.get_finished_spans()` after the calls."""
    _, exporter = tracing
    exporter.clear()
    yield exporter
    exporter.clear()


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now, from below the kernel's ephemeral range (32768 and up by default): a port taken from
    that range can be given to any outgoing connection, of this suite or not, between this check and the
    server's bind, and the server then fails to start. Never the same port twice in one run."""
    while True:
        port = random.randrange(20000, 32000)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port


class CollectorProcess:
    """`otel-llmcost collector` as a subprocess on free ports, with its own embedded store."""

    scheme = "http"
    START_ATTEMPTS = 3

    def __init__(self, store_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.store_dir = store_dir
        self.store_url = f"chdb://{store_dir}"
        self.env = {**os.environ, **(extra_env or {})}
        self.process: subprocess.Popen | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = self.store_dir.parent / f"collector-{self.http_port}.log"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_endpoint + "/llmcost/v1/health", timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 60) -> "CollectorProcess":
        """Start, and wait until healthy. Another program may still take a port between `free_port` and the
        collector's bind (the collector then exits saying so): the first start tries again on new ports."""
        for attempt in range(1 if self.process else self.START_ATTEMPTS):
            if self._start_once(timeout):
                return self
            if "already in use" not in self.log_path.read_text() or attempt == self.START_ATTEMPTS - 1:
                break
            self.log.close()
            self._choose_ports()
        raise RuntimeError(f"collector exited early:\n{self.log_path.read_text()}")

    def _start_once(self, timeout: float) -> bool:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_llmcost.cli", "collector", "--store", self.store_url,
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.1)
        raise RuntimeError(f"collector did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()

    def query(self, sql: str, parameters: dict | None = None) -> list[dict]:
        result = RemoteStore(self.store_url, self.http_endpoint).query(sql, parameters)
        return [dict(zip(result.column_names, row)) for row in result.rows]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.http_endpoint + "/llmcost/v1/stats", timeout=5) as response:
            return json.loads(response.read())

    def wait_for_rows(self, count: int, sql: str = "SELECT count() AS n FROM llm_spans", timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        n = -1
        while time.monotonic() < deadline:
            n = self.query(sql)[0]["n"]
            if n >= count:
                return n
            time.sleep(0.1)
        raise AssertionError(f"expected {count} rows, found {n}; collector log:\n{self.log_path.read_text()}")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An embedded store (chDB, in this process) with the schema applied; one per test module."""
    store = Store(f"chdb://{tmp_path_factory.mktemp('store') / 'store'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    """One collector process per test module (starting chDB takes about a second)."""
    process = CollectorProcess(tmp_path_factory.mktemp("store") / "llmcost").start()
    yield process
    process.stop()
