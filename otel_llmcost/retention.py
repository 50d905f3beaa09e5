"""Data retention: how long the store keeps raw spans and the per-minute rollups (`collector --retention 400d`,
or `OTEL_LLMCOST_RETENTION`).

Applied when the collector starts, as a TTL on `llm_spans` (by `timestamp`) and on every rollup table (the
MergeTree tables with a `minute` column: `llm_rollup_1m`, `llm_user_rollup_1m`, and any added later), so the
setting follows the collector's configuration instead of a migration. ClickHouse drops the expired rows in
the background (the first time, a mutation rewrites the parts that hold them). A table whose TTL already says
the same is left alone, so a restart costs nothing; `off` removes the TTL again. Budgets and the migration
log are never expired.
"""

from __future__ import annotations

import logging
import re

from .store import cluster_ddl

logger = logging.getLogger("otel_llmcost.retention")

OFF = ("off", "none", "0", "0d", "forever")


def parse_retention(text: str | None) -> int | None:
    """`400d`, `12w`, `400` (days) -> days; `off` -> 0 (no TTL); None or '' -> None (leave the store as it is)."""
    if text is None or not text.strip():
        return None
    value = text.strip().lower()
    if value in OFF:
        return 0
    match = re.fullmatch(r"(\d+)\s*([dw]?)", value)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a retention: {text!r} (use whole days or weeks, e.g. 400d or 56w, or off)")
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


def expiring_tables(store) -> list[tuple[str, str, str]]:
    """(table, time column, engine_full) of the tables retention applies to."""
    result = store.query(
        "SELECT t.name, c.name, t.engine_full FROM system.tables AS t "
        "INNER JOIN system.columns AS c ON c.database = t.database AND c.table = t.name "
        "WHERE t.database = currentDatabase() AND t.engine LIKE '%MergeTree' AND t.name LIKE 'llm\\_%' "
        "AND ((t.name IN ('llm_spans', 'llm_spans_local') AND c.name = 'timestamp') "
        "     OR (t.name NOT IN ('llm_spans', 'llm_spans_local') AND c.name = 'minute')) "
        "ORDER BY t.name")
    return [(row[0], row[1], row[2]) for row in result.rows]


def apply_retention(store, days: int | None) -> list[str]:
    """Sets (days > 0) or removes (0) the TTL of the expiring tables; returns the tables changed."""
    if days is None:
        return []
    changed = []
    for table, column, engine in expiring_tables(store):
        ttl = f"TTL toDateTime({column}) + toIntervalDay({days})"
        if (days and ttl in engine) or (not days and " TTL " not in engine):
            continue
        name = table[:-len("_local")] if store.cluster and table.endswith("_local") else table
        action = f"MODIFY {ttl}" if days else "REMOVE TTL"
        for statement in cluster_ddl(f"ALTER TABLE {name} {action}", store.cluster):
            store.command(statement)
        changed.append(table)
    if changed:
        logger.info("retention: %s on %s", f"{days} days" if days else "off (rows kept forever)", ", ".join(changed))
    return changed
