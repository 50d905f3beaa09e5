"""Memory: RSS of an app making 100k calls (plain and streamed, OpenAI and Anthropic, in-process
MockTransport) bare and instrumented by us, sampled after 1k, 10k, 50k and 100k calls (after a gc).
No growth is the target: what the instrumentation keeps per call must be released with the call.
The variants run at the same time (RSS does not depend on timing)."""

from __future__ import annotations

import subprocess
import sys

from .common import ROOT, log, table

VARIANTS = ("bare", "ours")


def run(rounds: int = 1, quick: bool = False) -> str:
    import json

    calls = 1_000 if quick else 100_000
    log(f"memory: {calls:,} calls each, variants {', '.join(VARIANTS)} in parallel")
    procs = {v: subprocess.Popen([sys.executable, "-m", "bench.instr_worker", v, "0", "0", "10", "10", "memory",
                                  str(calls)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v in VARIANTS}
    results = {}
    for variant, proc in procs.items():
        out, err = proc.communicate(timeout=1800)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        results[variant] = json.loads(lines[-1])["rss_kib"] if lines else {"error": err.strip()[-200:]}
    marks = sorted({int(k) for r in results.values() for k in r if k != "error"})
    rows = []
    for variant in VARIANTS:
        r = results[variant]
        if "error" in r:
            rows.append([variant, f"failed: {r['error']}"] + ["—"] * len(marks))
            continue
        values = [r.get(str(m), 0) / 1024 for m in marks]
        growth = values[-1] - values[1] if len(values) > 2 else float("nan")
        rows.append([{"bare": "bare SDK", "ours": "**otel-llmcost (ours)**"}[variant]]
                    + [f"{v:.1f}" for v in values] + [f"{growth:+.1f}"])
    header = ["app"] + [f"RSS MiB after {m:,} calls" for m in marks] + [f"growth {marks[1]:,}→{marks[-1]:,} MiB"]
    notes = ("\n\nOne process per variant; calls cycle through OpenAI chat, OpenAI stream (10 chunks), Anthropic "
             "messages, Anthropic stream (10 chunks); `ours` with a BatchSpanProcessor and a discarding exporter, flushed "
             "before each sample (spans waiting in its queue are not a leak), then `gc.collect()`.")
    return table(header, rows) + notes


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
