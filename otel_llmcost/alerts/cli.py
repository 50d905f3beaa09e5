"""`otel-llmcost alerts list | backtest | provision`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import load_rules, parse_duration


def parse_time(text: str) -> datetime:
    """ISO 8601 (UTC when no offset), or `now`, or `now-7d`."""
    match = re.fullmatch(r"now(?:-(\w+))?", text.strip())
    if match:
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        return now - timedelta(seconds=parse_duration(match.group(1))) if match.group(1) else now
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601, e.g. 2026-11-01T00:00Z)") from exc
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_step(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds < 60 or seconds % 60:
        raise argparse.ArgumentTypeError("--step must be whole minutes (rules evaluate per minute)")
    return seconds


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """`rule.param=value` (or `param=value` for every rule that has it)."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not value:
            raise argparse.ArgumentTypeError(f"--set {item!r}: use RULE.PARAM=VALUE")
        rule, _, param = key.rpartition(".")
        out.setdefault(rule or "*", {})[param] = value
    return out


def cmd_list(args: argparse.Namespace) -> int:
    for rule in load_rules(args.rule):
        print(f"{rule.name}  (severity {rule.severity}, for {rule.for_}; labels {', '.join(rule.labels)})")
        for p in rule.params.values():
            print(f"    {p.name} = {p.default}  {p.help}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from ..cli import print_table
    from ..store import QueryResult, open_store
    from .backtest import backtest

    rules = load_rules(args.rule)
    sets = parse_overrides(args.set)
    overrides = {}
    for rule in rules:
        own = {k: v for k, v in sets.get("*", {}).items() if k in rule.params}
        own.update(sets.get(rule.name, {}))
        overrides[rule.name] = own
    store = open_store(args.store)
    try:
        found = backtest(store, rules, args.start, args.end, args.step, overrides)
    finally:
        store.close()
    if args.format == "json":
        for event in found:
            print(json.dumps(event.as_json()))
        return 0
    rows = [(e.at.strftime("%Y-%m-%d %H:%M"), e.state, e.summary) for e in found]
    print_table(QueryResult(["at", "state", "message"], ["String"] * 3, rows), out=sys.stdout)
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from .provision import write

    out = Path(args.out)
    written = write(out)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{out}: up to date")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("alerts", help="alert rules: list, backtest over stored history, Grafana files")
    sub = p.add_subparsers(dest="alerts_command", required=True)

    q = sub.add_parser("list", help="the rules and their parameters (thresholds, windows) with defaults")
    q.add_argument("--rule", action="append", help="only this rule (repeatable)")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("backtest", help="evaluate the rules' own SQL at every step of a past range")
    q.add_argument("--store", help="store URL (default $OTEL_LLMCOST_STORE or chdb://./.llmcost)")
    q.add_argument("--rule", action="append", help="only this rule (repeatable); default all")
    q.add_argument("--from", dest="start", type=parse_time, required=True, help="ISO 8601, or now-7d")
    q.add_argument("--to", dest="end", type=parse_time, default=parse_time("now"), help="ISO 8601 (default now)")
    q.add_argument("--step", type=parse_step, default=60, help="evaluation step, whole minutes (default 1m)")
    q.add_argument("--set", action="append", metavar="RULE.PARAM=VALUE",
                   help="override a rule parameter (PARAM=VALUE: every rule that has it)")
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.set_defaults(func=cmd_backtest)

    q = sub.add_parser("provision", help="write the Grafana alert rules and dashboards generated from the SQL")
    q.add_argument("--out", default="grafana", help="the grafana/ folder (default ./grafana)")
    q.set_defaults(func=cmd_provision)


if __name__ == "__main__":  # python -m otel_llmcost.alerts.cli provision
    parser = argparse.ArgumentParser(prog="otel-llmcost")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
