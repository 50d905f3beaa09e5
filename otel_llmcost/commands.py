"""What the commands share: opening the store a reading command names (never creating one) and printing a
query's result as a table, JSON lines or CSV. Its own module, so that the commands registered in `cli.py`
(budgets, alerts, ...) import it rather than `cli.py`."""

from __future__ import annotations

import csv
import json
import re
import sys
from decimal import Decimal
from typing import Any, Sequence

from .errors import EXIT_FAILURE, UserError, native_stderr_captured
from .store import ENDPOINT_FILE, QueryResult, chdb_dir, encode_value, open_store, resolve_url


def existing_store(url: str | None) -> str:
    """The URL of the store a reading command uses; an embedded store must exist (reading never creates one).
    A ClickHouse server's database is checked by the server itself."""
    url = resolve_url(url)
    directory = chdb_dir(url)
    if directory is not None and not (directory / "metadata").is_dir() and not (directory / ENDPOINT_FILE).exists():
        raise UserError(f"no store at {directory}: nothing has been collected there",
                        "give the collector's store with --store (or $OTEL_LLMCOST_STORE), or run this in the "
                        "directory the collector runs in", EXIT_FAILURE)
    return url


def open_existing_store(url: str | None):
    """`open_store` for a reading command: the store must exist; chDB's own lock message is held back (the
    error explains it)."""
    url = existing_store(url)
    with native_stderr_captured():
        return open_store(url)


def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}" if value != 0 else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(encode_value(value))


def print_table(result: QueryResult, out=sys.stdout) -> None:
    header = result.column_names
    cells = [[format_value(v) for v in row] for row in result.rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})", file=out)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?|NULL", text))


def json_value(value: Any) -> str:
    """One result value as JSON text. A Decimal is a JSON number with its exact digits (as a float,
    123456789.123456789 would print as 123456789.12345679)."""
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    return json.dumps(encode_value(value))


def print_result(result: QueryResult, fmt: str, out=sys.stdout) -> None:
    if fmt == "json":
        for row in result.rows:
            print("{" + ", ".join(f"{json.dumps(k)}: {json_value(v)}" for k, v in zip(result.column_names, row)) + "}",
                  file=out)
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(result.column_names)
        for row in result.rows:
            writer.writerow(["" if v is None else format(v, "f") if isinstance(v, Decimal) else encode_value(v)
                             for v in row])
    else:
        print_table(result, out)
