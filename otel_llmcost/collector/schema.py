"""`otel-llmcost schema [--cluster NAME]`: the DDL the collector applies, for review or to run by hand."""

from __future__ import annotations

import argparse
import os

from ..store import schema_ddl


def cmd_schema(args: argparse.Namespace) -> int:
    for statement in schema_ddl(args.cluster):
        print(statement + ";\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("schema", help="print the schema DDL (for one server, or a cluster with --cluster)")
    p.add_argument("--cluster", default=os.environ.get("OTEL_LLMCOST_CLUSTER") or None,
                   help="ClickHouse cluster name: Replicated*MergeTree tables `<t>_local` ON CLUSTER plus "
                        "Distributed tables `<t>` over them (default $OTEL_LLMCOST_CLUSTER)")
    p.set_defaults(func=cmd_schema)
