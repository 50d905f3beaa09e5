"""Helpers for test_intake.py and test_durability.py: LLM spans made by the real SDK, raw OTLP posts, a small
downstream OTLP receiver, self-signed certificates, and collector processes with their own settings."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import CollectorProcess

_exporter = InMemorySpanExporter()
_provider = TracerProvider(resource=Resource.create({"service.name": "intake-test"}))
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
_tracer = _provider.get_tracer("intake-test")
_lock = threading.Lock()


def llm_spans(n: int, model: str = "gpt-4o", feature: str = "intake", non_llm: int = 0) -> list:
    """`n` finished spans of priced OpenAI chat calls (plus `non_llm` plain spans), made by the real SDK."""
    with _lock:
        _exporter.clear()
        for i in range(n):
            with _tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
                span.set_attributes({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model, "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": 1000 + i, "gen_ai.usage.output_tokens": 100 + i,
                    "llmcost.feature": feature,
                })
        for _ in range(non_llm):
            with _tracer.start_as_current_span("GET /health"):
                pass
        spans = list(_exporter.get_finished_spans())
        _exporter.clear()
    return spans


def span_ids(spans) -> list[str]:
    return [format(s.context.span_id, "016x") for s in spans if "gen_ai.operation.name" in (s.attributes or {})]


def request_bytes(spans) -> bytes:
    return encode_spans(spans).SerializeToString()


def post(endpoint: str, body: bytes, content_type: str = "application/x-protobuf", headers: dict | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(endpoint + "/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Downstream:
    """A minimal OTLP/HTTP receiver that records what it is sent (the collector's forwarding and metrics)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, body in list(self.received) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Collector(CollectorProcess):
    """A collector process that may use TLS and a token; queries go through its query endpoint."""

    def __init__(self, store_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {"OTEL_LLMCOST_BATCH_SECONDS": "0.2", **(extra_env or {})}
        super().__init__(store_dir, env)
        self.token = env.get("OTEL_LLMCOST_AUTH_TOKEN")
        self.context: ssl.SSLContext | None = None
        if env.get("OTEL_LLMCOST_TLS_CERT"):
            self.context = ssl.create_default_context(cafile=env["OTEL_LLMCOST_TLS_CERT"])
            self.scheme = "https"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _get(self, path: str, timeout: float = 5) -> bytes:
        request = urllib.request.Request(self.http_endpoint + path, headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
            return response.read()

    def healthy(self) -> bool:
        try:
            self._get("/llmcost/v1/health", timeout=1)
            return True
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: no clean stop at all."""
        self.process.kill()
        self.process.wait()
        self.log.close()

    def query(self, sql: str, parameters: dict | None = None) -> list[dict]:
        payload = json.dumps({"sql": sql, "parameters": parameters or {}}).encode()
        request = urllib.request.Request(self.http_endpoint + "/llmcost/v1/query", data=payload, method="POST",
                                         headers={"content-type": "application/json", **self.headers})
        with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
            body = json.loads(response.read())
        return [dict(zip(body["columns"], row)) for row in body["rows"]]

    def stats(self) -> dict:
        return json.loads(self._get("/llmcost/v1/stats"))

    def count(self, ids: list[str], final: bool = False) -> int:
        [row] = self.query(f"SELECT count() AS n FROM llm_spans {'FINAL' if final else ''} "
                           "WHERE has({ids:Array(String)}, span_id)", {"ids": ids})
        return int(row["n"])

    def wait_for(self, predicate, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; stats {self.stats()}; log:\n{self.log_path.read_text()}")

    def wait_stored(self, ids: list[str], timeout: float = 30) -> None:
        self.wait_for(lambda: self.count(ids) >= len(ids), f"{len(ids)} rows", timeout)

    def assert_each_once(self) -> dict:
        """Every row of llm_spans is a distinct span (no FINAL needed), and the rollup agrees with the rows."""
        [spans] = self.query("SELECT count() AS rows, uniqExact(trace_id, span_id) AS spans, "
                             "toString(sum(cost_usd)) AS cost FROM llm_spans")
        assert spans["rows"] == spans["spans"], spans
        [rollup] = self.query("SELECT sum(calls) AS calls, toString(sum(cost_usd)) AS cost FROM llm_rollup_1m")
        assert rollup["calls"] == spans["rows"], (rollup, spans)
        assert rollup["cost"] == spans["cost"], (rollup, spans)
        return spans


def fault_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    down = tmp_path / "store-down"
    return down, {"OTEL_LLMCOST_FAULT_STORE_DOWN_FILE": str(down)}

