"""`otel-llmcost alerts list | backtest | provision`."""

from __future__ import annotations

import argparse
import json
import math
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
        if not value.strip() or not key.strip():
            raise argparse.ArgumentTypeError(f"--set {item!r}: use RULE.PARAM=VALUE (or PARAM=VALUE)")
        rule, _, param = key.strip().rpartition(".")
        out.setdefault(rule or "*", {})[param] = value.strip()
    return out


def rule_overrides(rules: list, sets: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each rule's own --set values, every one checked: a rule or parameter that does not exist, or a value that
    is not a number of the parameter's type, is an error (never silently ignored)."""
    from ..errors import UserError

    by_name = {rule.name: rule for rule in rules}
    for name, params in sets.items():
        if name == "*":
            for param in params:
                if not any(param in rule.params for rule in rules):
                    raise UserError(f"--set {param}=...: no rule backtested here has a parameter {param!r}",
                                    "otel-llmcost alerts list shows the rules and their parameters")
        elif name not in by_name:
            known = [rule.name for rule in load_rules()]
            where = "is not among the --rule ones" if name in known else "does not exist"
            raise UserError(f"--set {name}.{next(iter(params))}=...: rule {name!r} {where}",
                            f"rules: {', '.join(known)}")
        else:
            unknown = [p for p in params if p not in by_name[name].params]
            if unknown:
                raise UserError(f"--set {name}.{unknown[0]}=...: rule {name} has no parameter {unknown[0]!r}",
                                f"its parameters: {', '.join(by_name[name].params) or 'none'}")
    overrides = {}
    for rule in rules:
        own = {k: v for k, v in sets.get("*", {}).items() if k in rule.params}
        own.update(sets.get(rule.name, {}))
        for param, value in own.items():
            declared = rule.params[param]
            try:
                number = float(value)
                declared.literal(value)
                fits = math.isfinite(number) and (
                    not declared.type.startswith(("UInt", "Int")) or number == int(number)) and (
                    not declared.type.startswith("UInt") or number >= 0)
            except ValueError:
                fits = False
            if not fits:
                kind = "a whole number, 0 or more" if declared.type.startswith("UInt") else \
                    "a whole number" if declared.type.startswith("Int") else "a finite number"
                raise UserError(f"--set {rule.name}.{param}={value}: {param} must be {kind}",
                                f"its default is {declared.default}: {declared.help}")
        overrides[rule.name] = own
    return overrides


def check_range(start: datetime, end: datetime, step: int) -> None:
    from ..errors import UserError
    from .backtest import MAX_STEPS

    if end < start:
        raise UserError(f"--to {end:%Y-%m-%d %H:%M} is before --from {start:%Y-%m-%d %H:%M}",
                        "give --from the earlier time (e.g. --from now-7d --to now)")
    steps = int((end - start).total_seconds()) // step + 1
    if steps > MAX_STEPS:
        needed = -(-int((end - start).total_seconds()) // (MAX_STEPS - 1) // 60)
        raise UserError(f"{steps:,} evaluations from --from to --to at --step {step // 60}m: at most {MAX_STEPS:,}",
                        f"use --step {needed}m or more, or a shorter range")


def selected_rules(names: list[str] | None) -> list:
    from ..errors import UserError

    try:
        return load_rules(names)
    except ValueError as exc:
        raise UserError(str(exc), "otel-llmcost alerts list shows the rules") from exc


def cmd_list(args: argparse.Namespace) -> int:
    for rule in selected_rules(args.rule):
        print(f"{rule.name}  (severity {rule.severity}, for {rule.for_}; labels {', '.join(rule.labels)})")
        for p in rule.params.values():
            print(f"    {p.name} = {p.default}  {p.help}")
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from ..commands import open_existing_store, print_table
    from ..store import QueryResult
    from .backtest import backtest

    rules = selected_rules(args.rule)
    overrides = rule_overrides(rules, parse_overrides(args.set))
    check_range(args.start, args.end, args.step)
    store = open_existing_store(args.store)
    # One rule at a time, so that a terminal shows how far it got (a week of history takes seconds a rule).
    progress = sys.stderr.isatty()
    found = []
    try:
        for i, rule in enumerate(rules):
            if progress:
                sys.stderr.write(f"\rbacktest: rule {i + 1}/{len(rules)} {rule.name:<40}")
                sys.stderr.flush()
            found.extend(backtest(store, [rule], args.start, args.end, args.step, overrides))
    finally:
        if progress:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
        store.close()
    found.sort(key=lambda e: (e.at, e.rule))
    if args.format == "json":
        for event in found:
            print(json.dumps(event.as_json()))
        return 0
    rows = [(e.at.strftime("%Y-%m-%d %H:%M"), e.state, e.summary) for e in found]
    print_table(QueryResult(["at", "state", "message"], ["String"] * 3, rows), out=sys.stdout)
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from ..grafana.provision import write

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
    q.add_argument("--rule", action="append", help="only this rule (repeatable); default all")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("backtest", help="evaluate the rules' own SQL at every step of a past range")
    q.add_argument("--store", help="store URL or directory (default $OTEL_LLMCOST_STORE, else ./.llmcost)")
    q.add_argument("--rule", action="append", help="only this rule (repeatable); default all")
    q.add_argument("--from", dest="start", type=parse_time, required=True, help="ISO 8601, or now-7d")
    q.add_argument("--to", dest="end", type=parse_time, default="now", help="ISO 8601, or now-1h")
    q.add_argument("--step", type=parse_step, default="1m", help="evaluation step, whole minutes")
    q.add_argument("--set", action="append", metavar="RULE.PARAM=VALUE",
                   help="override a rule parameter (PARAM=VALUE: every rule that has it)")
    q.add_argument("--format", choices=("table", "json"), default="table",
                   help="json: one event per line, data only")
    q.set_defaults(func=cmd_backtest)

    q = sub.add_parser("provision", help="write the Grafana alert rules and dashboards generated from the SQL")
    q.add_argument("--out", default="grafana", help="the grafana/ folder")
    q.set_defaults(func=cmd_provision)


if __name__ == "__main__":  # python -m otel_llmcost.alerts.cli provision
    parser = argparse.ArgumentParser(prog="otel-llmcost")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
