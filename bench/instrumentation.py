"""Instrumentation overhead per call: bare SDK vs ours vs the peers, in-process (httpx2.MockTransport).

Each (venv, variant) runs as its own process (instrumentations patch globals and cannot be undone
cleanly); the rounds are interleaved (bare, ours, native, bare@peer, peer, ... then again) and each
variant's added cost is taken against the bare run of the same venv in the same round.
Per-chunk cost = (added for a 22-chunk stream − added for a 2-chunk stream) / 20.
"""

from __future__ import annotations

import sys

from . import venvs
from .common import log, median, run_json, spread, table

SMALL, LARGE = 2, 22
SCENARIOS = [  # (column, plain key, stream?)
    ("OpenAI chat", "openai_chat"),
    ("OpenAI stream, per call", f"openai_stream_{SMALL}"),
    ("OpenAI stream, per chunk", "openai_stream"),
    ("Anthropic messages", "anthropic_messages"),
    ("Anthropic stream, per call", f"anthropic_stream_{SMALL}"),
    ("Anthropic stream, per chunk", "anthropic_stream"),
]
LABELS = {
    "ours": "**otel-llmcost (ours)**",
    "native": "anthropic 2.x native spans",
    "contrib": "official contrib openai-v2",
    "openllmetry": "OpenLLMetry",
    "openlit": "OpenLIT",
}
COVERS = {"contrib": ("openai",), "native": ("anthropic",)}


def plan(peers: bool) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """[(venv key, python, variant)] and {peer: why it cannot run}."""
    runs = [("main", sys.executable, "bare"), ("main", sys.executable, "ours"), ("main", sys.executable, "native"),
            ("main", sys.executable, "floor")]
    missing = {}
    if peers:
        for peer in venvs.PEERS:
            python, why = venvs.ensure(peer)
            if python is None:
                missing[peer] = why
                continue
            runs += [(peer, str(python), "bare"), (peer, str(python), peer)]
    return runs, missing


def run(rounds: int = 5, quick: bool = False, peers: bool = True) -> str:
    n_plain, n_stream = (30, 10) if quick else (200, 60)
    runs, missing = plan(peers)
    results: dict[tuple[str, str], list[dict]] = {(v, var): [] for v, _, var in runs}
    errors: dict[str, str] = {}
    for r in range(rounds):
        for venv, python, variant in runs:
            log(f"instrumentation round {r + 1}/{rounds}: {variant} ({venv} venv)")
            out = run_json([python, "-m", "bench.instr_worker", variant, str(n_plain), str(n_stream),
                            str(SMALL), str(LARGE)])
            if out is None or "error" in out:
                errors[variant] = (out or {}).get("error", "timed out")
                continue
            results[(venv, variant)].append(out)

    def added(venv: str, variant: str, key: str) -> list[float]:
        """Per round: variant minus the bare run of the same venv and round (per chunk for stream keys)."""
        diffs = []
        for v, b in zip(results[(venv, variant)], results[(venv, "bare")]):
            if key in ("openai_stream", "anthropic_stream"):
                big = v[f"{key}_{LARGE}"] - b[f"{key}_{LARGE}"]
                small = v[f"{key}_{SMALL}"] - b[f"{key}_{SMALL}"]
                diffs.append((big - small) / (LARGE - SMALL))
            else:
                diffs.append(v[key] - b[key])
        return diffs

    bare_main = results[("main", "bare")]
    header = ["instrumentation"] + [name for name, _ in SCENARIOS]
    rows = [["bare SDK call (µs CPU; min…max of rounds)"] + [
        "—" if key in ("openai_stream", "anthropic_stream") else
        f"{median(r[key] for r in bare_main):.0f} ({spread([r[key] for r in bare_main])})"
        for _, key in SCENARIOS]]
    for venv, _, variant in runs:
        if variant in ("bare", "floor"):
            continue
        row = [LABELS.get(variant, variant) + ("" if venv == "main" else f" {venvs.installed_version(venvs.venv_python(venv), venvs.PEERS[venv]['dist'])}")]
        if not results[(venv, variant)]:
            why = errors.get(variant, "?").split(" / ")[-1][:120]
            rows.append(row + [f"failed: {why}"] + ["—"] * (len(SCENARIOS) - 1))
            continue
        for _, key in SCENARIOS:
            provider = key.split("_")[0]
            if variant in COVERS and provider not in COVERS[variant]:
                row.append("n/a")
                continue
            diffs = added(venv, variant, key)
            base = median(r[key] for r in results[(venv, "bare")]) if key in results[(venv, "bare")][0] else None
            text = f"{median(diffs):+.1f} ({spread(diffs)})"
            if base:
                text += f" ×{(base + median(diffs)) / base:.2f}"
            row.append(text)
        rows.append(row)
    for peer, why in missing.items():
        rows.append([LABELS[peer], *([f"could not run: {why[:100]}"] + ["—"] * (len(SCENARIOS) - 1))])
    bare_peers = ", ".join(
        f"{venv}: OpenAI chat {median(r['openai_chat'] for r in results[(venv, 'bare')]):.0f} µs"
        for venv, _, variant in runs if variant == "bare" and venv != "main" and results[(venv, 'bare')])
    floors = results[("main", "floor")]
    floor_text = (f"The floor on this machine, same rounds: one OpenTelemetry SDK span started and ended through a "
                  f"BatchSpanProcessor costs {median(r['floor_16'] for r in floors):.1f} µs CPU with 16 attributes, "
                  f"{median(r['floor_0'] for r in floors):.1f} µs with none. ") if floors else ""
    notes = (f"\n\n{floor_text}Added CPU µs per call over the bare call of the same venv and round (median of {rounds} "
             f"interleaved rounds; in parentheses the min…max of the rounds), ×ratio to the bare call. "
             f"{n_plain} plain / {n_stream} streamed calls per timed loop, median of 3 loops per process. "
             f"Per chunk: (added at {LARGE} chunks − added at {SMALL} chunks) / {LARGE - SMALL}. "
             f"Bare calls in the peers' venvs: {bare_peers or 'n/a'}.")
    return table(header, rows) + notes


if __name__ == "__main__":
    print(run())
