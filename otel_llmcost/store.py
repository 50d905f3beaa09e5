"""The ClickHouse store: one client API (clickhouse-connect) over two backends chosen by URL.

- `chdb:///path/to/dir`: the embedded engine (chDB) in this process; the default, under `.llmcost/`.
- `clickhouse://user:password@host:8123/database` (or `clickhouses://` for TLS): a ClickHouse server.

An on-disk chDB store can be opened by one process at a time. While a collector holds it, the collector
publishes its query endpoint in `<dir>/collector.json`; `open_store` then sends queries there instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
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
WRITE_PATH = "/llmcost/v1/write"
REPRICE_PATH = "/llmcost/v1/reprice"
# A user's query (the `sql` command, the collector's query endpoint and its ClickHouse interface) may run this long.
QUERY_SECONDS = float(os.environ.get("OTEL_LLMCOST_QUERY_SECONDS") or 60)
READERS = 2  # users' queries that may run at once
RESULT_BYTES = 256 << 20  # the largest answer to a user's query


class StoreError(Exception):
    """A store that cannot be opened, or a query it refused; the message says which."""


class NotOneStatement(StoreError):
    """A user query that is empty or holds more than one statement."""


class NotReadOnly(StoreError):
    """A user query that is not a read."""


def single_statement(sql: str) -> str:
    """The one statement of a user's query text (a trailing `;` dropped); NotOneStatement otherwise.

    ClickHouse's embedded engine runs every statement of a multi-statement text, so a second statement is
    refused here, before the text reaches it. Quotes, backquotes, double quotes and comments are skipped the
    way ClickHouse's lexer skips them, so a `;` inside a string does not count."""
    i, n, end = 0, len(sql), None
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
            i += 1
        elif sql.startswith(("--", "# ", "#!"), i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close < 0 else close + 2
        elif c == ";":
            if end is None:
                end = i
            i += 1
        else:
            if end is not None and not c.isspace():
                raise NotOneStatement("one statement at a time: the query holds more than one (split at ';')")
            i += 1
    statement = sql[:end] if end is not None else sql
    if not statement.strip():
        raise NotOneStatement("the query is empty")
    return statement


def _code_of(statement: str) -> str:
    """The statement as the parser sees its words: string literals emptied, comments dropped, quoted identifiers
    unquoted (`file` and "file" name the same function as file)."""
    out, i, n = [], 0, len(statement)
    while i < n:
        c = statement[i]
        if c in "'\"`":
            j = i + 1
            while j < n and statement[j] != c:
                j += 2 if statement[j] == "\\" else 1
            out.append("''" if c == "'" else " " + statement[i + 1:j] + " ")
            i = j + 1
        elif statement.startswith(("--", "# ", "#!"), i):
            newline = statement.find("\n", i)
            i = n if newline < 0 else newline
        elif statement.startswith("/*", i):
            close = statement.find("*/", i + 2)
            i = n if close < 0 else close + 2
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


# What readonly=1 lets through that reaches outside the store: the embedded engine is its own client, so INTO
# OUTFILE writes a file, and the file() function (not the table function) reads any file it is given.
_OUTSIDE = re.compile(r"\bINTO\s+OUTFILE\b|\b(file|catboostEvaluate)\s*\(", re.I)
_LEADING = re.compile(r"(\s+|--[^\n]*|#[ !][^\n]*|/\*.*?\*/)*", re.S)
# DESCRIBE of a table by name only: DESCRIBE of a table function (file(...)) infers a schema from the file.
_DESCRIBE = re.compile(r"(DESC|DESCRIBE)\s+(TABLE\s+)?[\w.`\"]+\s*$", re.I)


def read_statement(sql: str) -> str:
    """The one statement of a user's query, if it is a read: SELECT (or WITH ... SELECT, or a parenthesized
    one), SHOW, EXISTS, or DESCRIBE of a table. `readonly=1` refuses writes, DDL and table functions, but not
    SYSTEM or KILL, and other statements do not take the SETTINGS clause that carries it."""
    statement = single_statement(sql)
    rest = statement[_LEADING.match(statement).end():]
    word = "(" if rest.startswith("(") else re.match(r"\w*", rest).group(0).upper()
    if word in ("SELECT", "WITH", "(", "SHOW", "EXISTS") or (word in ("DESC", "DESCRIBE") and _DESCRIBE.match(rest)):
        outside = _OUTSIDE.search(_code_of(statement))
        if outside:
            raise NotReadOnly(f"{' '.join(outside.group(0).split()).rstrip('(').strip()} reaches outside the store: refused "
                              "(READONLY)")
        return statement
    raise NotReadOnly(f"only reads may run here (SELECT, WITH, SHOW, EXISTS, DESCRIBE a table), not {word or rest[:20]!r}"
                      " (READONLY)")


def settings_clause(settings: dict[str, Any]) -> str:
    """`SETTINGS a = 1, b = 'x'` (names as ClickHouse spells settings; numbers bare, the rest quoted)."""
    parts = []
    for name, value in settings.items():
        if not re.fullmatch(r"\w+", name):
            raise StoreError(f"not a setting name: {name!r}")
        text = str(value)
        number = re.fullmatch(r"-?\d+(\.\d+)?", text)
        parts.append(f"{name} = {text if number else quote_string(text)}")
    return "SETTINGS " + ", ".join(parts)


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


MIGRATIONS_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS llm_schema_migrations "
    "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
    "ENGINE = MergeTree ORDER BY version"
)

# Tables whose rows must meet on one shard (ReplacingMergeTree keys) and how to shard them; others: rand().
SHARDING_KEYS = {
    "llm_spans": "cityHash64(trace_id, span_id)",
    "llm_budgets": "cityHash64(scope, scope_value, period)",
    "llm_schema_migrations": "version",
}
_CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?", re.I)
_CREATE_VIEW = re.compile(r"^CREATE\s+MATERIALIZED\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?", re.I)
_ALTER_TABLE = re.compile(r"^ALTER\s+TABLE\s+`?(\w+)`?", re.I)
_DROP_VIEW = re.compile(r"^DROP\s+VIEW\s+(IF\s+EXISTS\s+)?`?(\w+)`?", re.I)
_TRUNCATE = re.compile(r"^TRUNCATE\s+TABLE\s+(IF\s+EXISTS\s+)?`?(\w+)`?", re.I)
_COLUMN_CHANGE = re.compile(r"\b(ADD|MODIFY|DROP|RENAME)\s+COLUMN\b", re.I)  # (not MATERIALIZE: data, local)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(\s*\(([^)]*)\))?", re.I)


def cluster_ddl(statement: str, cluster: str | None) -> list[str]:
    """A schema statement for one server (as written in sql/*.sql), or for a ClickHouse cluster: each
    MergeTree table `t` becomes `t_local` (Replicated*MergeTree, ON CLUSTER) plus a Distributed `t` over it
    with the same name, so that inserts and queries need no change; materialized views read and write the
    local tables on every node. Other statements (INSERT ... SELECT) run once, through the Distributed tables.
    """
    statement = statement.strip().rstrip(";").strip()
    if not cluster:
        return [statement]
    on = f" ON CLUSTER {quote_identifier(cluster)}"
    match = _CREATE_TABLE.match(statement)
    engine = _ENGINE.search(statement)
    if match and engine:
        name = match.group(2)
        local = f"{name}_local"
        args = (engine.group(3) or "").strip()
        replicated = f"ENGINE = Replicated{engine.group(1)}('/clickhouse/tables/{{shard}}/{{database}}/{{table}}', " \
                     f"'{{replica}}'{', ' + args if args else ''})"
        local_ddl = statement[:match.start(2)] + local + on + statement[match.end():engine.start()] + replicated + \
            statement[engine.end():]
        key = SHARDING_KEYS.get(name, "rand()")
        distributed = (f"CREATE TABLE IF NOT EXISTS {name}{on} AS {local} "
                       f"ENGINE = Distributed({quote_string(cluster)}, currentDatabase(), {local}, {key})")
        return [local_ddl, distributed]
    match = _CREATE_VIEW.match(statement)
    if match:
        body = statement[match.end():]
        body = re.sub(r"\b(TO|FROM|JOIN)\s+`?(llm_\w+)`?", lambda m: f"{m.group(1)} {m.group(2)}_local", body, flags=re.I)
        return [statement[:match.end()] + on + body]
    match = _DROP_VIEW.match(statement)
    if match:  # a materialized view exists on every node, under its own name
        return [statement[:match.end()] + on + statement[match.end():]]
    match = _TRUNCATE.match(statement)
    if match:  # the data is in the local tables
        return [statement[:match.start(2)] + match.group(2) + "_local" + on + statement[match.end():]]
    match = _ALTER_TABLE.match(statement)
    if match:
        altered = [f"ALTER TABLE {match.group(1)}_local{on}" + statement[match.end():]]
        if _COLUMN_CHANGE.search(statement):  # the Distributed table's columns must match its local tables'
            altered.append(f"ALTER TABLE {match.group(1)}{on}" + statement[match.end():])
        return altered
    return [statement]


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def schema_ddl(cluster: str | None = None) -> list[str]:
    """Every statement `migrate` would run on an empty store, in order."""
    statements = cluster_ddl(MIGRATIONS_TABLE_DDL, cluster)
    for _, _, sql in migrations():
        for statement in split_statements(sql):
            statements.extend(cluster_ddl(statement, cluster))
    return statements


# Session settings for every query the store runs.
# - FINAL merges a row's versions only within its partition: in every table here, rows that share a sorting key
#   share a partition (llm_spans: the key holds toStartOfHour(timestamp), the partition is the month), so skipping
#   the cross-partition merge is exact, and a partition that is one merged part is read without merging at all.
# - No JIT compilation of expressions: compiling (on an expression's third use) costs one evaluation of an
#   alert rule more than the compiled code ever saves (BENCHMARKS.md has the figures).
SESSION_SETTINGS = {"do_not_merge_across_partitions_select_final": 1, "compile_expressions": 0,
                    "compile_aggregate_expressions": 0, "compile_sort_description": 0}


class Store:
    """A directly opened store (the embedded engine in this process, or a server over HTTP)."""

    def __init__(self, url: str | None = None, cluster: str | None = None) -> None:
        self.url = resolve_url(url)
        self.cluster = cluster or os.environ.get("OTEL_LLMCOST_CLUSTER") or None
        # Test hook (documented in collector/README.md): while this file exists, writes fail as if the store
        # were unreachable. Lets the tests take the embedded store "down" and bring it back.
        self.fault_file = os.environ.get("OTEL_LLMCOST_FAULT_STORE_DOWN_FILE") or None
        self.lock = threading.RLock()  # the chDB session is not safe for concurrent use
        self._types: dict[tuple, list[Any]] = {}  # (table, column names) -> clickhouse-connect column types
        self._readers: queue.LifoQueue = queue.LifoQueue()  # clients for users' queries, made as needed
        self._reader_count = 0
        self._readers_lock = threading.Lock()
        try:
            self.client = self._connect(create_database=True)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc

    def _connect(self, create_database: bool = False) -> Any:
        """A new client of the store (a session of its own), with the session settings."""
        import clickhouse_connect

        directory = chdb_dir(self.url)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{directory}")
            self.database = "default"
        else:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("clickhouse", "clickhouses", "http", "https"):
                raise StoreError(f"unknown store URL scheme {parsed.scheme!r}: use chdb:///dir or clickhouse://host:8123/db")
            self.database = (parsed.path or "/").strip("/") or "default"
            secure = parsed.scheme in ("clickhouses", "https")
            client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if secure else 8123),
                username=unquote(parsed.username or "default"),
                password=unquote(parsed.password or ""),
                secure=secure,
            )
            if create_database:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            client.database = self.database
        self._apply_session_settings(client)
        return client

    def _apply_session_settings(self, client: Any) -> None:
        for name, value in SESSION_SETTINGS.items():
            definition = client.server_settings.get(name)
            if definition is None or definition.readonly:
                continue  # an older server, or a read-only user: the same results, only slower
            client.set_client_setting(name, value)

    @property
    def is_embedded(self) -> bool:
        return chdb_dir(self.url) is not None

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self, before: int | None = None) -> list[int]:
        """Applies the schema files not yet applied to this store (with `before`, only those of lower versions:
        a store as an older release made it); returns their versions."""
        with self.lock:
            for statement in cluster_ddl(MIGRATIONS_TABLE_DDL, self.cluster):
                self.client.command(statement)
            done = {row[0] for row in self.client.query("SELECT version FROM llm_schema_migrations").result_rows}
            applied = []
            for version, name, sql in migrations():
                if version in done or (before is not None and version >= before):
                    continue
                for statement in split_statements(sql):
                    for ddl in cluster_ddl(statement, self.cluster):
                        self.client.command(ddl)
                self.client.insert("llm_schema_migrations", [(version, name)], column_names=["version", "name"])
                applied.append(version)
            self._types.clear()
            return applied

    # -- data -------------------------------------------------------------------------------------

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str],
               dedup_token: str | None = None, distinct_keys: bool = False) -> None:
        """Inserts column data (never SQL built from values). With `dedup_token`, a block inserted again with
        the same token is dropped, by the table and by the materialized views fed from it. `distinct_keys`:
        the caller vouches that no two rows share a sorting key, so the engine's merge of the block on insert
        (a no-op then, but a sort and a pass over every row) is skipped."""
        settings: dict[str, Any] = {}
        if dedup_token:
            settings = {"insert_deduplication_token": dedup_token,
                        "deduplicate_blocks_in_dependent_materialized_views": 1}
        if distinct_keys:
            settings["optimize_on_insert"] = 0
        if self.cluster:
            settings["distributed_foreground_insert"] = 1  # shards get the rows (and the token) before we ack
        settings["input_format_native_allow_types_conversion"] = 1  # (decimals sent as text, below)
        if self.fault_file and os.path.exists(self.fault_file):
            raise StoreError(f"store down (fault injection: {self.fault_file} exists)")
        if not rows:
            return
        columns = list(zip(*rows))  # column-oriented: the client serializes each column in one go
        with self.lock:
            types, as_text = self._column_types(table, tuple(column_names))
            for i in as_text:
                columns[i] = [None if value is None else str(value) for value in columns[i]]
            try:
                self.client.insert(table, columns, column_names=list(column_names), column_types=types,
                                   column_oriented=True, settings=settings)
            except Exception:
                self._types.pop((table, tuple(column_names)), None)  # the table may have changed: ask again
                raise
            finally:
                # The client's insert context refers to itself (a bound method of its own), so it is freed only
                # by a garbage collection, and it holds this list: emptied, the batch's values go now, by
                # reference counting, instead of waiting (and being walked by every collection) until then.
                columns.clear()

    def _column_types(self, table: str, column_names: tuple[str, ...]) -> tuple[list[Any], list[int]]:
        """The types the columns are sent as, asked once per table (the client would ask before every insert),
        and which columns go as text. Decimals do: the client's Decimal writer turns each value into text and
        back into a Decimal before scaling it (BENCHMARKS.md), while ClickHouse reads a
        decimal's text exactly, casting it to the column's type as it reads the block."""
        cached = self._types.get((table, column_names))
        if cached is None:
            from clickhouse_connect.datatypes.registry import get_from_name

            described = {row[0]: row[1] for row in
                         self.client.query(f"DESCRIBE TABLE {quote_identifier(table)}").result_rows}
            types, as_text = [], []
            for i, name in enumerate(column_names):
                type_name = described[name]
                if re.fullmatch(r"(Nullable\()?Decimal(32|64|128|256)?\(.*", type_name):
                    type_name = "Nullable(String)" if type_name.startswith("Nullable(") else "String"
                    as_text.append(i)
                types.append(get_from_name(type_name))
            cached = self._types[(table, column_names)] = (types, as_text)
        return cached

    def query(self, sql: str, parameters: dict | None = None) -> QueryResult:
        with self.lock:
            try:
                result = self.client.query(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc
        types = [t.name for t in result.column_types] if result.column_types else []
        return QueryResult(list(result.column_names), types, [tuple(r) for r in result.result_rows])

    # -- users' queries ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self, seconds: float):
        """A client for one user query, never the one that inserts: a user's query neither waits for inserts
        nor holds them up (the embedded engine runs sessions of one store side by side), and nothing a user
        sends (a SET) reaches the ingestion session."""
        try:
            client = self._readers.get_nowait()
        except queue.Empty:
            with self._readers_lock:
                make = self._reader_count < READERS
                if make:
                    self._reader_count += 1
            if make:
                try:
                    client = self._connect()
                except Exception as exc:
                    with self._readers_lock:
                        self._reader_count -= 1
                    raise StoreError(f"cannot open a session of {self.url}: {exc}") from exc
            else:
                try:
                    client = self._readers.get(timeout=seconds)
                except queue.Empty:
                    raise StoreError(f"the store is busy with {READERS} other queries; try again") from None
        try:
            yield client
        finally:
            self._readers.put(client)

    @staticmethod
    def read_only_settings(seconds: float, settings: dict | None = None) -> dict[str, Any]:
        """Settings of a user's query: the caller's (already checked), a time limit, and `readonly=1` last, so
        that nothing after it may change a setting (ClickHouse applies them in order; under readonly=1 no
        setting can be changed, in the query's own SETTINGS clause neither)."""
        out = dict(settings or {})
        out.pop("readonly", None)
        try:
            asked = float(out.get("max_execution_time") or 0)
        except ValueError:
            asked = 0
        out["max_execution_time"] = min(asked, seconds) if asked > 0 else seconds
        try:
            asked = int(out.get("max_result_bytes") or 0)
        except ValueError:
            asked = 0
        out["max_result_bytes"] = min(asked, RESULT_BYTES) if asked > 0 else RESULT_BYTES  # answers are held whole
        out["readonly"] = 1
        return out

    def user_query(self, sql: str, parameters: dict | None = None, seconds: float = QUERY_SECONDS) -> QueryResult:
        """A user's query: one statement, read-only (no INSERT, DDL, SYSTEM, KILL, file()/url(), SETTINGS
        readonly=0), at most `seconds` long, in a session of its own."""
        # The settings travel in the statement's own SETTINGS clause: they hold for this query only. (Passed as
        # client settings, the embedded backend applies them to the session with SET and restores them after,
        # which readonly=1 forbids: the session would stay read-only and refuse the next query's settings.)
        sql = read_statement(sql) + "\n" + settings_clause(self.read_only_settings(seconds))
        with self._reader(seconds) as client:
            try:
                result = client.query(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc
        types = [t.name for t in result.column_types] if result.column_types else []
        return QueryResult(list(result.column_names), types, [tuple(r) for r in result.result_rows])

    def user_raw_query(self, sql: str, fmt: str | None, settings: dict | None = None,
                       seconds: float = QUERY_SECONDS, parameters: dict | None = None) -> bytes:
        """A user's query (as `user_query`) answered in a ClickHouse output format, as the engine writes it:
        `fmt`, or the query's own FORMAT clause when `fmt` is None."""
        sql = read_statement(sql) + "\n" + settings_clause(self.read_only_settings(seconds, settings))
        with self._reader(seconds) as client:
            try:
                return client.raw_query(sql, parameters=parameters, fmt=fmt)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def command(self, sql: str, parameters: dict | None = None) -> Any:
        with self.lock:
            try:
                return self.client.command(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def close(self) -> None:
        with self.lock:
            clients = [self.client]
            while True:
                try:
                    clients.append(self._readers.get_nowait())
                except queue.Empty:
                    break
            for client in clients:
                try:
                    client.close()
                except Exception:
                    pass


class RemoteStore:
    """The embedded store of a running collector, reached through its query endpoint."""

    is_embedded = True

    def __init__(self, url: str, endpoint: str, token: str | None = None) -> None:
        self.url = url
        self.endpoint = endpoint
        self.token = token

    def _post(self, path: str, document: dict, timeout: float) -> dict:
        request = urllib.request.Request(self.endpoint + path, data=json.dumps(document).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            try:
                text = json.loads(text)["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise StoreError(text or str(exc)) from exc
        except OSError as exc:
            raise StoreError(f"collector at {self.endpoint} did not answer: {exc}") from exc

    def query(self, sql: str, parameters: dict | None = None) -> QueryResult:
        """A read-only query, run by the collector as `Store.user_query`."""
        body = self._post(QUERY_PATH, {"sql": sql, "parameters": parameters or {}}, QUERY_SECONDS + 30)
        rows = [tuple(decode_value(v, t) for v, t in zip(row, body["types"])) for row in body["rows"]]
        return QueryResult(body["columns"], body["types"], rows)

    user_query = query

    def command(self, sql: str, parameters: dict | None = None) -> Any:
        """One of the writes the collector makes on a client's behalf (`writes.NAMED_WRITES`), by name."""
        from .writes import name_of

        name = name_of(sql)
        if name is None:
            raise StoreError("the collector's store takes only its own writes (budgets, savings, reprice); "
                             "queries through it are read-only")
        return self._post(WRITE_PATH, {"write": name, "parameters": parameters or {}}, QUERY_SECONDS + 30)

    def reprice(self, since: str, until: str, model: str | None, price_file: str | None) -> dict:
        """`reprice` run by the collector on its own store (reprice.py), with this price file (its text and
        name are sent); the counts it returns."""
        text = Path(price_file).read_text() if price_file else None
        return self._post(REPRICE_PATH, {"since": since, "until": until, "model": model, "prices": text,
                                         "prices_name": Path(price_file).name if price_file else None}, 3600)

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
