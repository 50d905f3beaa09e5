"""The collector: receive OTLP -> spool -> normalize to LLM calls -> price -> write to ClickHouse.

Settings come from arguments, else from the environment (collector/README.md lists them all).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from ..retention import apply_retention, parse_retention
from ..stop_signals import wait_for_stop
from ..store import ENDPOINT_FILE, Store, chdb_dir, resolve_url
from . import normalize
from .forward import Forwarder
from .loader import Loader
from .operations import Operations
from .pipeline import Pipeline
from .receivers import (MAX_BODY_BYTES, MAX_CONNECTIONS, RETRY_AFTER_SECONDS, Intake, MemoryBudget, Receivers,
                        is_loopback_host)
from .spool import Spool
from .stats import Stats
from .telemetry import Telemetry

logger = logging.getLogger("otel_llmcost.collector")


def _env(name: str, default, cast=str):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return cast(value.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={value.strip()!r} is not {KINDS.get(cast, 'valid')}"
                          + (f": {exc}" if cast not in KINDS else "")) from None


def _globs(text: str) -> list[str]:
    return [glob.strip() for glob in text.split(",") if glob.strip()]


def _option(variable: str, default, cast=str, flag: str | None = None):
    """An option read from its variable when `Options` is made; the variable and the `otel-llmcost collector`
    flag, if it has one, are kept with it for error messages (`setting`)."""
    return field(default_factory=lambda: _env(variable, default, cast), metadata={"variable": variable, "flag": flag})


@dataclass
class Options:
    """Everything besides the store, host and ports; each has an OTEL_LLMCOST_* variable."""

    spool_dir: str | None = _option("OTEL_LLMCOST_SPOOL_DIR", None, flag="--spool-dir")
    spool_max_bytes: int = _option("OTEL_LLMCOST_SPOOL_MAX_BYTES", 1 << 30, int, flag="--spool-max-bytes")
    max_request_bytes: int = _option("OTEL_LLMCOST_MAX_REQUEST_BYTES", MAX_BODY_BYTES, int, flag="--max-request-bytes")
    batch_rows: int = _option("OTEL_LLMCOST_BATCH_ROWS", 50_000, int)
    batch_seconds: float = _option("OTEL_LLMCOST_BATCH_SECONDS", 1.0, float)
    retry_after: int = _option("OTEL_LLMCOST_RETRY_AFTER_SECONDS", RETRY_AFTER_SECONDS, int)
    tls_cert: str | None = _option("OTEL_LLMCOST_TLS_CERT", None, flag="--tls-cert")
    tls_key: str | None = _option("OTEL_LLMCOST_TLS_KEY", None, flag="--tls-key")
    forward_endpoint: str | None = _option("OTEL_LLMCOST_FORWARD_ENDPOINT", None, flag="--forward-endpoint")
    forward_queue: int = _option("OTEL_LLMCOST_FORWARD_QUEUE", 1000, int)
    stats_log_seconds: float = _option("OTEL_LLMCOST_STATS_LOG_SECONDS", 60.0, float)
    cluster: str | None = _option("OTEL_LLMCOST_CLUSTER", None)
    # Glob patterns of attributes stored even though they hold prompt content or look like secrets.
    keep_attributes: list[str] | tuple[()] = _option("OTEL_LLMCOST_KEEP_ATTRIBUTES", (), _globs)
    # The loader is stalled (health 503, spans refused) after this long with work and no progress.
    stall_seconds: float = _option("OTEL_LLMCOST_STALL_SECONDS", 60.0, float)
    retention_days: int | None = _option("OTEL_LLMCOST_RETENTION", None, parse_retention)
    # The ClickHouse HTTP interface (clickhouse_http.py): None = 8123 with the embedded store, off with a
    # server (Grafana reads the server itself); 0 = off.
    clickhouse_port: int | None = _option("OTEL_LLMCOST_CLICKHOUSE_PORT", None, int, flag="--clickhouse-port")
    max_connections: int = _option("OTEL_LLMCOST_MAX_CONNECTIONS", MAX_CONNECTIONS, int)
    # Bytes that request bodies may hold at once, all requests together (default: 4 requests of the largest size).
    max_inflight_bytes: int | None = _option("OTEL_LLMCOST_MAX_INFLIGHT_BYTES", None, int)
    allow_unauthenticated: bool = _option("OTEL_LLMCOST_ALLOW_UNAUTHENTICATED", False,
                                          lambda v: v.lower() in ("1", "true", "yes"))

    @classmethod
    def with_overrides(cls, options: "Options | None" = None, **overrides) -> "Options":
        """`options` (default: from the environment) with the given values (e.g. CLI flags; None keeps the
        setting as it is), validated."""
        options = options or cls()
        for key, value in overrides.items():
            if key not in {f.name for f in fields(cls)}:
                raise TypeError(f"unknown collector option {key!r}")
            if value is not None:
                setattr(options, key, value)
        if isinstance(options.keep_attributes, str):
            options.keep_attributes = _globs(options.keep_attributes)
        options.validate()
        return options

    def validate(self) -> None:
        """Refuse, before anything starts, a setting the collector could only fail on later (or worse, run
        with): each ConfigError names the setting and its value."""
        for name in ("spool_max_bytes", "max_request_bytes", "batch_rows", "retry_after", "forward_queue",
                     "max_connections", "max_inflight_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{setting(name)} {value!r}: must be a whole number greater than 0")
        for name in ("batch_seconds", "stall_seconds", "stats_log_seconds"):
            value = getattr(self, name)
            zero_ok = name == "stats_log_seconds"  # 0 turns the periodic stats line off
            if not isinstance(value, (int, float)) or not (value >= 0 if zero_ok else value > 0) \
                    or value != value or value == float("inf"):
                raise ConfigError(f"{setting(name)} {value!r}: must be a number of seconds "
                                  f"{'of 0 or more' if zero_ok else 'greater than 0'}")
        if self.clickhouse_port is not None and not 0 <= self.clickhouse_port <= 65535:
            raise ConfigError(f"{setting('clickhouse_port')} {self.clickhouse_port!r}: not a port "
                              "(use 1-65535, or 0 to turn the ClickHouse HTTP interface off)")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigError(f"{setting(name)} {path}: no such file, or not readable (give the path of a PEM file)")
        if bool(self.tls_cert) != bool(self.tls_key):
            given, missing = ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
            raise ConfigError(f"{setting(given)} is set but {setting(missing)} is not: TLS needs the certificate "
                              "and its key together")
        if self.forward_endpoint:
            parsed = urlparse(self.forward_endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigError(f"{setting('forward_endpoint')} {self.forward_endpoint!r}: not an OTLP/HTTP URL "
                                  "(use e.g. http://otel-collector:4318)")
            try:
                parsed.port
            except ValueError:
                raise ConfigError(f"{setting('forward_endpoint')} {self.forward_endpoint!r}: not a port in "
                                  "the URL") from None


_OPTION_FIELDS = {f.name: f for f in fields(Options)}


def setting(name: str) -> str:
    """How a user names an option: `--flag (OTEL_LLMCOST_VAR)`, or the variable alone."""
    metadata = _OPTION_FIELDS[name].metadata
    variable, flag = metadata["variable"], metadata["flag"]
    return f"{flag} ({variable})" if flag else variable


class ConfigError(Exception):
    """Settings the collector refuses to start with; the message says why and what to do."""


KINDS = {int: "a whole number", float: "a number"}


DEFAULT_CLICKHOUSE_PORT = 8123
PLACEHOLDER_TOKEN = "CHANGE_ME"  # collector.env.example's


def default_spool_dir(store_url: str) -> Path:
    directory = chdb_dir(store_url)
    return directory / "spool" if directory is not None else Path(".llmcost-spool").resolve()


class Collector:
    """A running collector: the store, the spool, the loader and both receivers."""

    def __init__(self, store_url: str | None = None, host: str = "127.0.0.1", http_port: int = 4318,
                 grpc_port: int = 4317, auth_token: str | None = None, options: Options | None = None,
                 **overrides) -> None:
        # e.g. cluster=... from a CLI flag; None keeps the default
        self.options = o = Options.with_overrides(options, **overrides)
        normalize.set_kept_attributes(o.keep_attributes)
        if not auth_token and not is_loopback_host(host) and not o.allow_unauthenticated:
            raise ConfigError(
                f"listening on {host} lets other machines send spans and read the store: set OTEL_LLMCOST_AUTH_TOKEN "
                "(clients send 'Authorization: Bearer <token>'), listen on 127.0.0.1, or pass --allow-unauthenticated "
                "(OTEL_LLMCOST_ALLOW_UNAUTHENTICATED=1) if the network in front of it does the access control")
        if auth_token == PLACEHOLDER_TOKEN:
            raise ConfigError(f"OTEL_LLMCOST_AUTH_TOKEN is still {PLACEHOLDER_TOKEN} (collector.env.example): set a "
                              "token of your own, e.g. from `openssl rand -hex 32`")
        self.stats = Stats()
        self.store = Store(resolve_url(store_url), cluster=o.cluster)
        if chdb_dir(self.store.url) is not None:
            os.chmod(chdb_dir(self.store.url), 0o700)  # the store holds who called what: owner-only
        self.store.migrate()
        apply_retention(self.store, o.retention_days)
        self.pipeline = Pipeline(self.store, stats=self.stats)
        self.spool = Spool(o.spool_dir or default_spool_dir(self.store.url), max_bytes=o.spool_max_bytes)
        self.loader = Loader(self.pipeline, self.spool, batch_rows=o.batch_rows, batch_seconds=o.batch_seconds)
        self.forwarder = Forwarder(o.forward_endpoint, self.stats, max_queue=o.forward_queue) \
            if o.forward_endpoint else None
        self.intake = Intake(self.spool, self.stats, self.forwarder, retry_after=o.retry_after,
                             refusing=self.refusing, health=self.health)
        # At least one largest request, received and decompressed, must fit.
        self.budget = MemoryBudget(max(o.max_inflight_bytes or 4 * o.max_request_bytes, 2 * o.max_request_bytes + 2))
        self.receivers = Receivers(self.intake, self.store, self.stats_json, host, http_port, grpc_port, auth_token,
                                   max_bytes=o.max_request_bytes, tls_cert=o.tls_cert, tls_key=o.tls_key,
                                   max_connections=o.max_connections, budget=self.budget,
                                   operations=Operations(self.store))
        self.clickhouse = self._clickhouse_interface(host, auth_token)
        self.telemetry = Telemetry(self.stats, self.gauges, log_seconds=o.stats_log_seconds)
        self.host = host
        directory = chdb_dir(self.store.url)
        self.endpoint_file = directory / ENDPOINT_FILE if directory is not None else None

    def _clickhouse_interface(self, host: str, auth_token: str | None):
        from .clickhouse_http import ClickHouseInterface

        port = self.options.clickhouse_port
        if port == 0 or (port is None and not self.store.is_embedded):
            return None
        try:
            return ClickHouseInterface(self.store, host, DEFAULT_CLICKHOUSE_PORT if port is None else port, auth_token,
                                       self.budget, self.receivers.ssl_context)
        except OSError as exc:
            if port is not None:  # asked for: a port that cannot be had is an error
                self.receivers.close()
                raise OSError(f"cannot listen for the ClickHouse interface on {host}:{port}: {exc}") from exc
            logger.warning("ClickHouse interface off: cannot listen on %s:%d (%s); set OTEL_LLMCOST_CLICKHOUSE_PORT",
                           host, DEFAULT_CLICKHOUSE_PORT, exc)
            return None

    def gauges(self) -> dict:
        return {"spool_backlog_bytes": self.spool.backlog, "queue_depth": self.spool.pending_records,
                "forward_queue_depth": self.forwarder.depth if self.forwarder else 0,
                "store_down": int(self.stats.values["store_down"])}

    def stats_json(self) -> dict:
        return {**self.gauges(), **self.stats.snapshot(), "loader_alive": self.loader.is_alive(),
                "loader_stalled": self.loader.stalled(self.options.stall_seconds)}

    def refusing(self) -> str:
        """Why spans accepted now would not be stored, or "" (checked for each request: cheap)."""
        if not self.loader.is_alive():
            return "the loader is not running" if self.loader.ident is not None else ""
        if self.loader.stalled(self.options.stall_seconds):
            error = f" (last error: {self.loader.last_error})" if self.loader.last_error else ""
            return (f"the loader has stored nothing for over {self.options.stall_seconds:g}s with "
                    f"{self.spool.backlog} bytes waiting{error}")
        return ""

    def health(self) -> tuple[bool, dict]:
        """(ok, report) for GET /llmcost/v1/health: not ok while the loader is dead or stalled (spans are refused
        then), the store is down (spans are spooled while there is room) or the spool cannot be written."""
        problems = []
        refusal = self.refusing()
        if refusal:
            problems.append(refusal)
        if self.stats.values["store_down"]:
            problems.append(f"the store is down: spooling ({self.spool.backlog} of {self.spool.max_bytes} bytes)")
        if self.loader.spool_failing:
            problems.append(f"the spool checkpoint cannot be written: {self.loader.spool_failing}")
        report = {"status": "unhealthy" if problems else "ok", "loader_alive": self.loader.is_alive(),
                  "accepting": not refusal, "spool_backlog_bytes": self.spool.backlog,
                  "store_down": bool(self.stats.values["store_down"])}
        if problems:
            report["problems"] = problems
        return not problems, report

    @property
    def http_endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.receivers.tls else 'http'}://{host}:{self.receivers.http_port}"

    def start(self) -> "Collector":
        warmed = self.pipeline.warm_up()
        if self.spool.backlog:
            logger.info("spool: %d bytes (%d requests) accepted before the last stop are not stored yet: replaying",
                        self.spool.backlog, self.spool.pending_records)
        self.loader.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self.receivers.start()
        if self.clickhouse is not None:
            self.clickhouse.start()
        self.telemetry.start()
        if self.endpoint_file is not None:
            # Other processes (the CLI) cannot open the embedded store while we hold it: tell them where we are.
            info = {"endpoint": self.http_endpoint, "pid": os.getpid()}
            tmp = self.endpoint_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(self.endpoint_file)
        logger.info("collector listening: OTLP/HTTP %s, OTLP/gRPC %s:%d%s, store %s, spool %s (%d recent calls "
                    "remembered)%s", self.http_endpoint, self.host, self.receivers.grpc_port,
                    " (TLS)" if self.receivers.tls else "", self.store.url, self.spool.dir, warmed,
                    f", ClickHouse HTTP interface on port {self.clickhouse.port}" if self.clickhouse else "")
        return self

    def stop(self) -> None:
        self.receivers.stop()  # nothing new is acknowledged from here on
        if self.clickhouse is not None:
            self.clickhouse.stop()
        self.loader.stop()     # stores what is spooled (or leaves it in the spool for the next start)
        if self.forwarder is not None:
            self.forwarder.stop()
        self.telemetry.stop()
        logger.info("%s", self.telemetry.summary())
        if self.endpoint_file is not None:
            try:
                self.endpoint_file.unlink()
            except FileNotFoundError:
                pass
        self.spool.close()
        self.store.close()


def run(store_url: str | None, host: str, http_port: int, grpc_port: int, auth_token: str | None,
        **options) -> None:
    """Runs until SIGTERM or SIGINT, then stops cleanly (everything acknowledged is stored or spooled)."""
    # The spool, the store and anything else this process creates hold prompts' metadata and who called what:
    # owner-only (0700 directories, 0600 files).
    os.umask(0o077)
    collector = Collector(store_url, host, http_port, grpc_port, auth_token, **options).start()
    print(f"otel-llmcost collector: OTLP/HTTP {collector.http_endpoint}/v1/traces, "
          f"OTLP/gRPC {host}:{collector.receivers.grpc_port}, store {collector.store.url}"
          + (f", ClickHouse HTTP port {collector.clickhouse.port}" if collector.clickhouse else ""), flush=True)
    wait_for_stop()
    collector.stop()
    print("otel-llmcost collector: stopped", flush=True)
