"""Forwarding every received span, LLM or not, to a downstream OTLP/HTTP endpoint, so that the collector can
sit inline in front of another OpenTelemetry backend.

The raw request (protobuf) is queued and sent by one background thread over a kept-alive connection; the
queue is bounded and a full queue drops the request (counted), so forwarding never slows or blocks intake.
A request the downstream refuses with 429/502/503/504 is retried a few times, others are dropped.
"""

from __future__ import annotations

import http.client
import logging
import queue
import ssl
import threading
import time
from urllib.parse import urlparse

logger = logging.getLogger("otel_llmcost.collector")

RETRYABLE = {429, 502, 503, 504}


def traces_url(endpoint: str) -> str:
    """`http://host:4318` -> `http://host:4318/v1/traces`; a URL with a path is used as it is."""
    parsed = urlparse(endpoint)
    return endpoint if parsed.path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


class Forwarder(threading.Thread):
    def __init__(self, endpoint: str, stats, headers: dict[str, str] | None = None, max_queue: int = 1000,
                 timeout: float = 10.0, attempts: int = 3) -> None:
        super().__init__(name="llmcost-forward", daemon=True)
        self.url = traces_url(endpoint)
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"forward endpoint must be http:// or https://, not {endpoint!r}")
        self.parsed = parsed
        self.path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_queue)
        self.stats = stats
        self.timeout = timeout
        self.attempts = attempts
        self.connection: http.client.HTTPConnection | None = None

    def submit(self, payload: bytes) -> None:
        """Queues a serialized ExportTraceServiceRequest; never blocks."""
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            self.stats.add(forward_dropped=1)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def _connect(self) -> http.client.HTTPConnection:
        if self.connection is None:
            host, port = self.parsed.hostname, self.parsed.port
            if self.parsed.scheme == "https":
                self.connection = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                              context=ssl.create_default_context())
            else:
                self.connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self.connection

    def _send(self, payload: bytes) -> int:
        connection = self._connect()
        try:
            connection.request("POST", self.path, body=payload, headers=self.headers)
            response = connection.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            return response.status
        except (OSError, http.client.HTTPException):
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def run(self) -> None:
        while True:
            payload = self.queue.get()
            if payload is None:
                return
            for attempt in range(self.attempts):
                try:
                    status = self._send(payload)
                except (OSError, http.client.HTTPException) as exc:
                    status, error = 0, str(exc)
                else:
                    error = f"HTTP {status}"
                if 200 <= status < 300:
                    self.stats.add(forward_sent=1)
                    break
                if status and status not in RETRYABLE or attempt + 1 == self.attempts:
                    self.stats.add(forward_failed=1)
                    logger.warning("forwarding to %s failed (%s): request dropped", self.url, error)
                    break
                time.sleep(0.2 * 2 ** attempt)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.join(timeout)
        self._drop_connection()
