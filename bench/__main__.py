"""`python -m bench [all|instrumentation|mistral|collector|store|queries|pricing|memory|reads] [--quick] [--rounds N] [--write]`

Each benchmark prints a markdown table; `--write` puts the tables into BENCHMARKS.md (between the
`<!-- bench:NAME -->` markers of the figures section; prose and method are kept).
"""

from __future__ import annotations

import argparse
import importlib
import re
import time
from datetime import datetime, timezone

from .common import ROOT, log, machine

BENCHES = ("pricing", "instrumentation", "mistral", "guard", "memory", "collector", "store", "queries", "reads")
DOC = ROOT / "BENCHMARKS.md"


def write_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", nargs="?", default="all", choices=("all",) + BENCHES)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves it runs, numbers mean little")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--write", action="store_true", help="update the tables in BENCHMARKS.md")
    parser.add_argument("--no-peers", action="store_true", help="instrumentation: skip the peers' venvs")
    parser.add_argument("--peers", default=None, help="instrumentation: only these peers (comma-separated)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    names = BENCHES if args.bench == "all" else (args.bench,)
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        kwargs = {"rounds": rounds, "quick": args.quick}
        if name == "instrumentation":
            kwargs["peers"] = False if args.no_peers else args.peers.split(",") if args.peers else True
        body = module.run(**kwargs)
        took = time.monotonic() - t0
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = (f"_`python -m bench {name}{' --quick' if args.quick else ''}"
                f"{f' --rounds {args.rounds}' if args.rounds else ''}"
                f"{f' --peers {args.peers}' if args.peers and name == 'instrumentation' else ''}`, {stamp}, "
                f"took {took:.0f} s._\n\n{body}")
        print(f"\n## {name}\n\n{body}\n", flush=True)
        if args.write:
            write_section(name, body)
    if args.write:
        write_section("machine", f"{machine()}")
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
