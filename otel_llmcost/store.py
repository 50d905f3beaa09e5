"""The ClickHouse store: one client API (clickhouse-connect) over two backends chosen by URL.

- `chdb:///path/to/dir`: the embedded engine (chDB) in this process; the default, under `.llmcost/`.
- `clickhouse://user:password@host:8123/database` (or `clickhouses://` for TLS): a ClickHouse server.

An on-disk chDB store can be opened by one process at a time. While a collector holds it, the collector
publishes its query endpoint in `<dir>/collector.json`; `open_store` then sends queries there instead.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

DEFAULT_STORE_DIR = ".llmcost"
ENDPOINT_FILE = "collector.json"
QUERY_PATH = "/llmcost/v1/query"


class StoreError(Exception):
    """A store that cannot be opened, or a query it refused; the message says which."""


def resolve_url(url: str | None = None) -> str:
    url = url or os.environ.get("OTEL_LLMCOST_STORE") or ""
    if not url:
        return "chdb://" + str(Path(DEFAULT_STORE_DIR).resolve())
    if url.startswith("chdb:") and not url.startswith("chdb:///"):
        # chdb:relative/dir or chdb://relative/dir: make it absolute so every process agrees.
        return "chdb://" + str(Path(re.sub(r"^chdb:(//)?", "", url)).resolve())
    return url


def chdb_dir(url: str) -> Path | None:
    return Path(url[len("chdb://"):]) if url.startswith("chdb://") else None


@dataclass
class QueryResult:
    column_names: list[str]
    column_types: list[str]
    rows: list[tuple]


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every schema file, in order."""
    found = []
    for entry in resources.files("otel_llmcost").joinpath("sql").iterdir():
        match = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    """Statements of a schema file: separated by `;` at the end of a line; `--` comments dropped."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


class Store:
    """A directly opened store (the embedded engine in this process, or a server over HTTP)."""

    def __init__(self, url: str | None = None) -> None:
        import clickhouse_connect

        self.url = resolve_url(url)
        self.lock = threading.RLock()  # the chDB session is not safe for concurrent use
        directory = chdb_dir(self.url)
        try:
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
                self.client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
                self.database = "default"
            else:
                parsed = urlparse(self.url)
                if parsed.scheme not in ("clickhouse", "clickhouses", "http", "https"):
                    raise StoreError(f"unknown store URL scheme {parsed.scheme!r}: use chdb:///dir or clickhouse://host:8123/db")
                self.database = (parsed.path or "/").strip("/") or "default"
                secure = parsed.scheme in ("clickhouses", "https")
                self.client = clickhouse_connect.get_client(
                    host=parsed.hostname or "localhost",
                    port=parsed.port or (8443 if secure else 8123),
                    username=unquote(parsed.username or "default"),
                    password=unquote(parsed.password or ""),
                    secure=secure,
                )
                self.client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                self.client.database = self.database
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc

    @property
    def is_embedded(self) -> bool:
        return chdb_dir(self.url) is not None

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Applies the schema files not yet applied to this store; returns their versions."""
        with self.lock:
            self.client.command(
                "CREATE TABLE IF NOT EXISTS llm_schema_migrations "
                "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
                "ENGINE = MergeTree ORDER BY version"
            )
            done = {row[0] for row in self.client.query("SELECT version FROM llm_schema_migrations").result_rows}
            applied = []
            for version, name, sql in migrations():
                if version in done:
                    continue
                for statement in split_statements(sql):
                    self.client.command(statement)
                self.client.insert("llm_schema_migrations", [(version, name)], column_names=["version", "name"])
                applied.append(version)
            return applied

    # -- data -------------------------------------------------------------------------------------

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
               dedup_token: str | None = None) -> None:
        settings = {}
        if dedup_token:
            settings = {"insert_deduplication_token": dedup_token,
                        "deduplicate_blocks_in_dependent_materialized_views": 1}
        with self.lock:
            self.client.insert(table, rows, column_names=list(column_names), settings=settings)

    def query(self, sql: str, parameters: dict | None = None) -> QueryResult:
        with self.lock:
            try:
                result = self.client.query(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc
        types = [t.name for t in result.column_types] if result.column_types else []
        return QueryResult(list(result.column_names), types, [tuple(r) for r in result.result_rows])

    def command(self, sql: str, parameters: dict | None = None) -> Any:
        with self.lock:
            try:
                return self.client.command(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def close(self) -> None:
        with self.lock:
            try:
                self.client.close()
            except Exception:
                pass


class RemoteStore:
    """The embedded store of a running collector, reached through its query endpoint."""

    is_embedded = True

    def __init__(self, url: str, endpoint: str, token: str | None = None) -> None:
        self.url = url
        self.endpoint = endpoint
        self.token = token

    def query(self, sql: str, parameters: dict | None = None) -> QueryResult:
        payload = json.dumps({"sql": sql, "parameters": parameters or {}}).encode()
        request = urllib.request.Request(self.endpoint + QUERY_PATH, data=payload, method="POST",
                                         headers={"content-type": "application/json"})
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise StoreError(exc.read().decode(errors="replace").strip() or str(exc)) from exc
        except OSError as exc:
            raise StoreError(f"collector at {self.endpoint} did not answer: {exc}") from exc
        rows = [tuple(decode_value(v, t) for v, t in zip(row, body["types"])) for row in body["rows"]]
        return QueryResult(body["columns"], body["types"], rows)

    def command(self, sql: str, parameters: dict | None = None) -> Any:
        return self.query(sql, parameters)

    def close(self) -> None:
        pass


def encode_value(value: Any) -> Any:
    """A query result value as JSON: Decimals as strings (exact), dates as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode(errors="replace")
    return value


def decode_value(value: Any, type_name: str) -> Any:
    if isinstance(value, str) and "Decimal" in type_name:
        return Decimal(value)
    return value


def open_store(url: str | None = None) -> Store | RemoteStore:
    """The store at `url`; for an embedded store held by a running collector, that collector's endpoint."""
    url = resolve_url(url)
    directory = chdb_dir(url)
    if directory is not None:
        published = directory / ENDPOINT_FILE
        if published.exists():
            try:
                info = json.loads(published.read_text())
                if collector_alive(info["endpoint"]):
                    return RemoteStore(url, info["endpoint"], os.environ.get("OTEL_LLMCOST_AUTH_TOKEN"))
            except (OSError, ValueError, KeyError):
                pass
    store = Store(url)
    store.migrate()
    return store


def collector_alive(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/llmcost/v1/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
