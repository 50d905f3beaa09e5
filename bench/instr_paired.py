"""Paired in-process rounds of the instrumentation benchmark, for the instrumentations that can be undone.

    python -m bench.instr_paired VARIANT ROUNDS N_PLAIN N_STREAM CHUNKS_SMALL CHUNKS_LARGE

One process, one venv: for each scenario, timed loops alternate bare (uninstrumented) and instrumented
(`instrument()` ... `uninstrument()`), ROUNDS pairs; the added cost of a round is instrumented minus the bare
loop just before it. Both halves of a pair share the process, its warm caches and its moment on a busy
machine, so this is much steadier than comparing separate processes. Prints one JSON line: per scenario, the
added CPU microseconds of every round. VARIANT: ours, contrib, openllmetry (OpenLIT cannot be undone in-process).
Standard library, the SDKs and OpenTelemetry only: it runs in the peers' venvs too.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

# One instrumentation per row: the Anthropic SDK's own tracing off in both halves of every pair.
os.environ["ANTHROPIC_OPEN_TELEMETRY"] = "false"

from bench.instr_worker import make_clients, scenarios, setup_tracing  # noqa: E402


def instrumentors(variant: str) -> list:
    if variant == "ours":
        from otel_llmcost.instrumentation.anthropic import AnthropicInstrumentor
        from otel_llmcost.instrumentation.openai import OpenAIInstrumentor

        return [OpenAIInstrumentor(), AnthropicInstrumentor()]
    if variant == "contrib":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        return [OpenAIInstrumentor()]
    if variant == "openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        return [OpenAIInstrumentor(), AnthropicInstrumentor()]
    raise SystemExit(f"no paired rounds for {variant}")


def main() -> None:
    variant = sys.argv[1]
    rounds, n_plain, n_stream, small, large = (int(x) for x in sys.argv[2:7])
    provider, _ = setup_tracing("native")  # the global provider and its BatchSpanProcessor; nothing instrumented
    tools = instrumentors(variant)
    covers = {"contrib": ("openai",)}.get(variant, ("openai", "anthropic"))

    def loop(fn, n: int) -> float:
        gc.collect()
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        provider.force_flush()  # the export of this loop's spans is paid inside it
        return (time.process_time_ns() - start) / n / 1000

    out: dict = {"variant": variant}
    for chunks, only_streams in ((small, False), (large, True)):
        oai, ant = make_clients(chunks)
        for name, fn in scenarios(oai, ant).items():
            stream = name.endswith("stream")
            if (only_streams and not stream) or name.split("_")[0] not in covers:
                continue
            n = n_stream if stream else n_plain
            for _ in range(max(n // 4, 20)):  # warm the bare path
                fn()
            added = []
            for r in range(rounds):
                bare = loop(fn, n)
                for tool in tools:
                    tool.instrument(tracer_provider=provider)
                try:
                    if r == 0:
                        for _ in range(max(n // 4, 20)):  # warm the instrumented path
                            fn()
                    added.append(loop(fn, n) - bare)
                finally:
                    for tool in tools:
                        tool.uninstrument()
            out[f"{name}_{chunks}" if stream else name] = added
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
