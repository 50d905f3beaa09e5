"""Instrumentation overhead per call: bare SDK vs ours vs the peers, in-process (httpx2.MockTransport).

Each (venv, variant) runs as its own process (instrumentations patch globals and cannot be undone
cleanly); the rounds are interleaved (bare, ours, native, bare@peer, peer, ... then again) and each
variant's added cost is taken against the bare run of the same venv in the same round.
Per-chunk cost = (added for a 102-chunk stream − added for a 2-chunk stream) / 100 (over 100 chunks, so that
the noise of two per-call figures is divided by 100).
"""

from __future__ import annotations

import sys

from . import venvs
from .common import log, median, percentile, run_json, spread, table

SMALL, LARGE = 2, 102
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
    "ours_metrics": "**ours, GenAI metrics recorded**",
    "ours_no_metrics": "**ours, meter provider set, OTEL_LLMCOST_METRICS=false**",
    "contrib_metrics": "official contrib openai-v2, metrics recorded",
    "native": "anthropic 2.x native spans",
    "contrib": "official contrib openai-v2",
    "openllmetry": "OpenLLMetry",
    "openlit": "OpenLIT",
}
COVERS = {"contrib": ("openai",), "contrib_metrics": ("openai",), "native": ("anthropic",)}
# Variants that run in a peer's venv besides the peer itself: the contrib with a meter provider set.
PEER_EXTRAS = {"contrib": ("contrib_metrics",)}


def selected(peers) -> set[str]:
    """`peers`: True (all), False (none) or the names of some."""
    return set(venvs.PEERS) if peers is True else set(peers or ())


def plan(peers) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """[(venv key, python, variant)] and {peer: why it cannot run}."""
    runs = [("main", sys.executable, "bare"), ("main", sys.executable, "ours"),
            ("main", sys.executable, "ours_metrics"), ("main", sys.executable, "ours_no_metrics"),
            ("main", sys.executable, "native"), ("main", sys.executable, "floor")]
    missing = {}
    if peers:
        for peer in venvs.PEERS:
            if peer not in selected(peers):
                continue
            python, why = venvs.ensure(peer)
            if python is None:
                missing[peer] = why
                continue
            runs += [(peer, str(python), "bare"), (peer, str(python), peer)]
            runs += [(peer, str(python), extra) for extra in PEER_EXTRAS.get(peer, ())]
    return runs, missing


def run(rounds: int = 5, quick: bool = False, peers=True) -> str:
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
                  f"{median(r['floor_0'] for r in floors):.1f} µs with none. Our request wrapper's own CPU beyond "
                  f"the span it makes (the wrapper around a function returning a real call's parsed response, against "
                  f"the same span, same name and attributes set at the same moments, made by hand around the same "
                  f"function; tight loop, 7 alternations): {median(r['own_openai_chat'] for r in floors):.1f} µs per "
                  f"OpenAI chat call ({floors[0]['own_openai_chat_attributes']} attributes), "
                  f"{median(r['own_anthropic_messages'] for r in floors):.1f} µs per Anthropic messages call "
                  f"({floors[0]['own_anthropic_messages_attributes']} attributes). Our stream wrapper alone (its "
                  f"iterator and reader over the events of a real stream, parsed once by the SDK, in a tight loop, "
                  f"against the same events iterated bare): {median(r['event_openai'] for r in floors):.2f} µs "
                  f"per OpenAI chunk, {median(r['event_anthropic'] for r in floors):.2f} µs per Anthropic event; "
                  f"the per-chunk columns measure the same through whole streamed calls, where the noise of a "
                  f"call is larger than this. What the GenAI conventions' attributes add alone (request parameters, "
                  f"server, finish reasons; the same wrapper with and without them, through this tracer, a request "
                  f"with temperature, top_p, max_tokens, stop and seed): "
                  f"{median(r['semconv_openai_chat'] for r in floors):+.1f} µs per OpenAI chat call, "
                  f"{median(r['semconv_anthropic_messages'] for r in floors):+.1f} µs per Anthropic messages call; "
                  f"what the GenAI client metrics add alone (duration and two token-usage points recorded into an SDK "
                  f"meter provider, against the same wrapper without): "
                  f"{median(r['metrics_openai_chat'] for r in floors):+.1f} µs and "
                  f"{median(r['metrics_anthropic_messages'] for r in floors):+.1f} µs. ") if floors else ""
    notes = (f"\n\n{floor_text}Added CPU µs per call over the bare call of the same venv and round (median of {rounds} "
             f"interleaved rounds; in parentheses the min…max of the rounds), ×ratio to the bare call. "
             f"{n_plain} plain / {n_stream} streamed calls per timed loop, median of 3 loops per process. "
             f"Per chunk: (added at {LARGE} chunks − added at {SMALL} chunks) / {LARGE - SMALL}. "
             f"Bare calls in the peers' venvs: {bare_peers or 'n/a'}.")
    return table(header, rows) + notes + "\n\n" + paired(quick, peers, missing)


PAIRED = ("ours", "contrib", "openllmetry")  # OpenLIT cannot be undone in-process


def paired(quick: bool, peers, missing: dict[str, str]) -> str:
    """The same scenarios, bare and instrumented alternated inside one process (`bench/instr_paired.py`):
    steadier than the table above, for the instrumentations that can be uninstrumented."""
    passes, rounds_per_pass = (1, 2) if quick else (2, 8)
    n_plain, n_stream = (30, 10) if quick else (200, 60)
    variants = [v for v in PAIRED if v == "ours" or (v in selected(peers) and v not in missing)]
    added: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for p in range(passes):
        for variant in variants:
            python = sys.executable if variant == "ours" else str(venvs.venv_python(variant))
            log(f"instrumentation, paired pass {p + 1}/{passes}: {variant}")
            out = run_json([python, "-m", "bench.instr_paired", variant, str(rounds_per_pass), str(n_plain),
                            str(n_stream), str(SMALL), str(LARGE)])
            for key, values in (out or {}).items():
                if isinstance(values, list):
                    added[variant].setdefault(key, []).extend(values)

    def cell(values: dict[str, list[float]], key: str) -> str:
        if key in ("openai_stream", "anthropic_stream"):
            big, small = values.get(f"{key}_{LARGE}"), values.get(f"{key}_{SMALL}")
            if not big or not small:
                return "n/a"
            diffs = [(b - s) / (LARGE - SMALL) for b, s in zip(big, small)]
        else:
            diffs = values.get(key)
            if not diffs:
                return "n/a"
        return f"{median(diffs):+.1f} ({percentile(diffs, 0.25):.1f}…{percentile(diffs, 0.75):.1f})"

    rows = []
    for variant in variants:
        label = LABELS[variant] + ("" if variant == "ours" else
                                   f" {venvs.installed_version(venvs.venv_python(variant), venvs.PEERS[variant]['dist'])}")
        rows.append([label] + [cell(added[variant], key) if added[variant] else "failed (see the log)"
                               for _, key in SCENARIOS])
    header = ["paired in one process: added µs CPU per call (interquartile range)"] + [n for n, _ in SCENARIOS]
    rounds = passes * rounds_per_pass
    return (table(header, rows) + f"\n\nPaired: in one process per instrumentation, {rounds} rounds of a bare loop "
            f"followed by an instrumented one (`instrument()` … `uninstrument()`), {n_plain} plain / {n_stream} "
            f"streamed calls per loop, the Anthropic SDK's own tracing off; added = instrumented − the bare loop "
            f"just before it; median and interquartile range of the rounds. OpenLIT cannot be uninstrumented, so "
            f"it has no paired row.")


if __name__ == "__main__":
    print(run())
