"""Store writes: CPU per row to insert the collector's rows into the embedded store and merge them, alone.

The rows are what the collector makes of the collector benchmark's load (`bench.collector.build_batch`, through
`Pipeline.rows_for`), built before the clock starts; each insert is what the loader writes in a second at
about 14k spans/s (14 requests of 512 spans), with the loader's settings (`distinct_keys`). Measured in the
worker process (chDB runs in it): CPU of the inserts (the materialized views, the projections and the
background merges that start meanwhile included), then of `OPTIMIZE ... FINAL` of every table (what merging
all the parts left costs). Variants, one process each (chDB opens one store per process), interleaved:
- current schema: llm_spans' parts compact up to 256 MiB (050), the resource attributes as one
  `LowCardinality(String)` of JSON per row (040);
- wide parts from 10 MiB: the schema before 050 (ClickHouse's default part format);
- resource as a map per row: the schema before 040, the same rows with the resource's `Map` in each.
"""

from __future__ import annotations

import atexit
import json
import random
import resource
import shutil
import sys
import tempfile

from .common import log, median, run_json, spread, table

# variant -> (label, the schema's first migration left out: Store.migrate(before=...))
VARIANTS = {"json": ("current schema (compact parts to 256 MiB, 050)", None),
            "wide": ("wide parts from 10 MiB (schema before 050)", 50),
            "map": ("and the resource as a map per row (schema before 040)", 40)}


def worker(variant: str, inserts: int) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from otel_llmcost.store import Store
    from otel_llmcost.collector import rows as rows_module
    from otel_llmcost.collector.otlp_lite import calls_in
    from otel_llmcost.collector.pipeline import Pipeline

    from .collector import build_batch, refresh
    from .queries import merge_tables

    directory = tempfile.mkdtemp(prefix="bench-store-")
    atexit.register(shutil.rmtree, directory, True)
    store = Store(f"chdb://{directory}/store")
    store.migrate(before=VARIANTS[variant][1])
    pipeline = Pipeline(store)
    rng = random.Random(1)
    spans = build_batch(rng)
    columns = list(rows_module.COLUMNS)
    batches = []
    for _ in range(inserts):
        rows: list[tuple] = []
        for _ in range(14):
            refresh(spans, rng)
            rows.extend(pipeline.rows_for(encode_spans(spans).SerializeToString())[0])
        batches.append(rows)
    if variant == "map":
        at = columns.index("resource_json")
        columns[at] = "resource_attributes"
        attributes = next(calls_in(encode_spans(spans).SerializeToString())).resource_attributes
        batches = [[row[:at] + (attributes,) + row[at + 1:] for row in rows] for rows in batches]
    # The older schema lacks the columns later migrations added: the rows are written without them.
    present = {row[0] for row in store.query("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                             "AND table = 'llm_spans'").rows}
    kept = [i for i, column in enumerate(columns) if column in present]
    if len(kept) < len(columns):
        columns = [columns[i] for i in kept]
        batches = [[tuple(row[i] for i in kept) for row in rows] for rows in batches]

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    count = sum(map(len, batches))
    t0 = cpu()
    for rows in batches:
        store.insert("llm_spans", rows, columns, distinct_keys=True)
    t1 = cpu()
    merge_tables(store)
    t2 = cpu()
    store.close()
    print(json.dumps({"rows": count, "insert_us": (t1 - t0) / count * 1e6, "merge_us": (t2 - t1) / count * 1e6}))


def run(rounds: int = 5, quick: bool = False) -> str:
    inserts = 2 if quick else 15
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for i in range(rounds):
        for variant in VARIANTS:
            log(f"store round {i + 1}/{rounds}: {variant}, {inserts} inserts of 14 x 512 rows")
            result = run_json([sys.executable, "-m", "bench.store", variant, str(inserts)])
            if result and "error" not in result:
                results[variant].append(result)
    rows = []
    for variant, (label, _) in VARIANTS.items():
        got = results[variant]
        insert, merge = [r["insert_us"] for r in got], [r["merge_us"] for r in got]
        total = [a + b for a, b in zip(insert, merge)]
        rows.append([label, f"{median(insert):.1f} ({spread(insert)})", f"{median(merge):.1f} ({spread(merge)})",
                     f"{median(total):.1f} ({spread(total)})", len(got)])
    rows_per_round = results["json"][0]["rows"] if results["json"] else "?"
    return (table(["schema", "insert CPU µs per row (min…max)", "merging the rest, µs per row",
                   "total µs per row", "rounds"], rows)
            + f"\n\n{rows_per_round:,} rows per round in inserts of 7,168 (the collector's rows of its benchmark "
              "load), in one process with the embedded store; the insert figure includes the materialized views, "
              "the projections and the background merges that ran meanwhile, the second the "
              "`OPTIMIZE ... FINAL` of every table after them.")


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]))
