"""How the CLI reports a failure: one or two lines on stderr (what was wrong, what to do), a non-zero exit
code, and the Python traceback and the engine's own message only with `--debug`.

`UserError` is what the commands raise for a mistake the user can fix. `explain` turns any other exception
that reaches the top (a store error, a missing extra, a file that is not there, ...) into the same two lines;
engine errors (`Code: 62. DB::Exception: ...`) are put in the user's words.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

EXIT_USAGE = 2    # the command line was wrong
EXIT_FAILURE = 1  # the command could not do its work

# Modules of the `collector` extra: a command that needs one in an app's environment says which extra to install.
COLLECTOR_EXTRA_MODULES = ("genai_prices", "clickhouse_connect", "chdb", "yaml", "opentelemetry.proto",
                           "google.protobuf")
INSTALL_COLLECTOR = "pip install 'otel-llmcost[collector]'"


class UserError(Exception):
    """A mistake the user can fix: `message` says what was wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, exit_code


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("OTEL_LLMCOST_LOG_LEVEL", "").strip().upper() == "DEBUG"


def redact_url(url: str) -> str:
    """A store URL without its password (messages end up in terminals and CI logs)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":***@", 1)


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    name = exc.name or ""
    if name == "grafana_foundation_sdk" or name.startswith("grafana_foundation_sdk."):
        return "pip install grafana-foundation-sdk"
    if any(name == m or name.startswith(m + ".") for m in COLLECTOR_EXTRA_MODULES):
        return INSTALL_COLLECTOR
    return None


def _missing_module(exc: BaseException) -> ModuleNotFoundError | None:
    """The missing module of an extra behind `exc` (itself or what caused it), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ModuleNotFoundError) and missing_extra(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


# -- engine errors ------------------------------------------------------------------------------------------

_ENGINE = re.compile(r"Code:\s*(\d+)\.\s*DB::Exception:\s*(.*?)(?:\s*\(([A-Z_]+)\))?(?:\s*\(version [^)]*\))?\s*$",
                     re.S)
_QUERY_TABLES = "otel-llmcost sql \"SHOW TABLES\" lists the tables, \"DESCRIBE llm_spans\" the columns of one"


def _unwrap(text: str) -> str:
    """The message inside the collector query endpoint's JSON envelope, if it is one."""
    text = text.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            return text
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return document["message"].strip()
    return text


def _first_sentence(text: str, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.split(r"\. (?:In scope|Stack trace|Expected one of|While processing|While executing)\b", text)[0]
    text = re.sub(r"\s*FORMAT Native\b", "", text).rstrip(". ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def engine_error(text: str) -> tuple[str, str | None] | None:
    """(message, hint) for a ClickHouse/chDB error text, or None when it is not one."""
    text = _unwrap(text)
    match = _ENGINE.search(text)
    if not match:
        return None
    code, body, name = int(match.group(1)), match.group(2), match.group(3) or ""
    if code == 62 or name == "SYNTAX_ERROR":
        where = re.search(r"\(line (\d+), col (\d+)\)(?::\s*(.*?))?(?:\s+FORMAT Native\b|\. Expected|$)", body, re.S)
        if where:
            near = re.sub(r"\s+", " ", where.group(3) or "").strip()
            near = near if len(near) <= 40 else near[:39] + "…"
            at = f"at line {where.group(1)}, column {where.group(2)}"
            return (f"SQL syntax error {at}" + (f", near {near!r}" if near else " (the query ends too early)"),
                    "check the query's spelling and quotes")
        return "SQL syntax error: " + _first_sentence(body), "check the query's spelling and quotes"
    if code == 47 or name == "UNKNOWN_IDENTIFIER":
        ident = re.search(r"identifier [`'\"]?([^`'\"\s]+)[`'\"]?", body)
        maybe = re.search(r"Maybe you meant: (\[.*?\])", body)
        return (f"unknown column {ident.group(1) if ident else ''}".rstrip()
                + (f" (maybe you meant {maybe.group(1)})" if maybe else ""), _QUERY_TABLES)
    if code == 60 or name == "UNKNOWN_TABLE":
        table = re.search(r"identifier [`'\"]?([^`'\"\s]+)[`'\"]?|Table (\S+) does not exist", body)
        return f"unknown table {(table.group(1) or table.group(2)) if table else ''}".rstrip(), _QUERY_TABLES
    if code == 46 or name == "UNKNOWN_FUNCTION":
        return _first_sentence(body), "see https://clickhouse.com/docs/sql-reference/functions"
    if code == 164 or name == "READONLY":
        return "this query would change the store, and queries here are read-only", \
            "use SELECT; budgets are changed with otel-llmcost budget set|remove"
    if code in (516, 194, 192) or name in ("AUTHENTICATION_FAILED", "REQUIRED_PASSWORD", "UNKNOWN_USER"):
        return "ClickHouse refused the user or password of the store URL", \
            "check the user:password in --store / $OTEL_LLMCOST_STORE"
    if code == 497 or name == "ACCESS_DENIED":
        return "ClickHouse denied the store's user: " + _first_sentence(body), \
            "grant it the rights README.md lists (section \"ClickHouse grants\")"
    if code == 81 or name == "UNKNOWN_DATABASE":
        return _first_sentence(body), "check the database name at the end of the store URL"
    if code == 241 or name == "MEMORY_LIMIT_EXCEEDED":
        return "the query needed more memory than the engine may use", "narrow the time range or aggregate more"
    if code == 159 or name == "TIMEOUT_EXCEEDED":
        return "the query took too long and was stopped", "narrow the time range"
    return f"the store refused the query: {_first_sentence(body)}" + (f" ({name})" if name else ""), None


def store_in_use(directory: str) -> tuple[str, str]:
    """The message for an embedded store another process holds, naming the collector that does if it says so."""
    from .store import ENDPOINT_FILE

    try:
        with open(os.path.join(directory, ENDPOINT_FILE)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and info.get("endpoint"):
        pid = f" (pid {info['pid']})" if info.get("pid") else ""
        return (f"the store {directory} is in use by the collector at {info['endpoint']}{pid}",
                "stop that collector first, or give this one another --store")
    return (f"the store {directory} is open in another process (an embedded store can be opened by one process "
            "at a time)", "stop that process, or read the store through its collector")


def _store_error(text: str) -> tuple[str, str | None, int]:
    text = _unwrap(text)
    opening = re.match(r"cannot open store (\S+): (.*)", text, re.S)
    if opening:
        url, cause = opening.group(1), opening.group(2)
        if "Cannot lock file" in cause or "EmbeddedServer" in cause:
            return (*store_in_use(url[len("chdb://"):] if url.startswith("chdb://") else url), EXIT_FAILURE)
        refused = re.search(r"host='([^']+)', port=(\d+)", cause)
        if refused or "Connection refused" in cause or "Max retries" in cause:
            where = f"{refused.group(1)}:{refused.group(2)}" if refused else redact_url(url)
            return (f"cannot reach ClickHouse at {where}",
                    "is the server up? check the host and port in --store / $OTEL_LLMCOST_STORE", EXIT_FAILURE)
        translated = engine_error(cause)
        if translated:
            return (translated[0], translated[1], EXIT_FAILURE)
        return f"cannot open the store {redact_url(url)}: {_first_sentence(cause)}", None, EXIT_FAILURE
    translated = engine_error(text)
    if translated:
        return (translated[0], translated[1], EXIT_FAILURE)
    return _first_sentence(text, 300), None, EXIT_FAILURE


# -- any exception ------------------------------------------------------------------------------------------


def explain(exc: BaseException) -> tuple[str, str | None, int]:
    """(what was wrong, what to do or None, exit code) for an exception that reached the command line."""
    from .store import StoreError

    if isinstance(exc, UserError):
        return exc.message, exc.hint, exc.exit_code
    if isinstance(exc, argparse.ArgumentTypeError):
        return str(exc), None, EXIT_USAGE
    missing = _missing_module(exc)
    if missing is not None:  # (also under a StoreError: opening a store imports its client)
        exc = missing
    elif isinstance(exc, StoreError):
        return _store_error(str(exc))
    if isinstance(exc, ModuleNotFoundError):
        install = missing_extra(exc)
        if install:
            return f"this command needs the Python module {exc.name!r}, which is not installed here", \
                install, EXIT_FAILURE
        return str(exc), None, EXIT_FAILURE
    if type(exc).__name__ == "PriceFileError":
        text = str(exc).strip()
        where = re.search(r"line \d+, column \d+", text)
        first = text.splitlines()[0] if text else type(exc).__name__
        return first + (f" ({where.group(0)})" if where and where.group(0) not in first else ""), \
            "fix the price file (see collector/prices.example.yaml)", EXIT_USAGE
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "the address is already in use: another program listens on that port", \
            "stop it, or choose another port", EXIT_FAILURE
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}", None, EXIT_FAILURE
    if isinstance(exc, OSError):
        return str(exc), None, EXIT_FAILURE
    text = str(exc).strip()
    translated = engine_error(text)
    if translated:
        return translated[0], translated[1], EXIT_FAILURE
    return f"unexpected error: {type(exc).__name__}: {_first_sentence(text, 300)}", \
        "this is a bug in otel-llmcost; run again with --debug and report what it shows", EXIT_FAILURE


def report(exc: BaseException, command: str, debug: bool, out=None) -> int:
    """Prints the one or two lines for `exc` (with the traceback when debugging); returns the exit code."""
    import traceback

    out = out or sys.stderr
    message, hint, code = explain(exc)
    if debug:
        traceback.print_exception(exc, file=out)
    print(f"{command}: {message}", file=out)
    if hint:
        print(f"  {hint}" + ("" if debug else " (--debug shows the details)" if _has_details(exc) else ""), file=out)
    elif not debug and _has_details(exc):
        print("  (--debug shows the details)", file=out)
    return code


def _has_details(exc: BaseException) -> bool:
    return not isinstance(exc, (UserError, argparse.ArgumentTypeError))


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Holds back what native code (chDB) writes straight to file descriptor 2 while the block runs: written
    out afterwards when the block succeeds, kept for --debug when it fails (the command explains instead)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            if text and (not failed or debug_requested(sys.argv)):
                os.write(2, text)
