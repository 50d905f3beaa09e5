"""The benchmarks run (tiny sizes, no timing thresholds): each `python -m bench NAME --quick` prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("name, expect", [
    ("pricing", "spans/s"),
    ("memory", "RSS MiB after"),
    ("collector", "OTLP/gRPC"),
    ("store", "resource as a map per row"),
    ("queries", "CLI `report --since 24h`"),
    ("mistral", "what our stream reader adds per event"),
])
def test_bench_quick(name, expect):
    out = bench(name, "--quick")
    assert f"## {name}" in out and expect in out
    assert "| --- " not in out  # a markdown table was printed
    assert "|---|" in out
    if name == "store":  # both variants ran (a failed worker leaves a NaN)
        assert "nan" not in out
    if name == "collector":  # and the one-core capacity, where two cores can be told apart
        assert "stored by a collector on one core" in out or "Capacity on one core: not measured" in out


def test_instrumentation_worker_ours():
    """One round of the instrumentation benchmark for our instrumentor (the peers need their own venvs)."""
    result = subprocess.run([sys.executable, "-m", "bench.instr_worker", "ours", "5", "3", "2", "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("openai_chat", "openai_stream_2", "openai_stream_4", "anthropic_messages", "anthropic_stream_4"):
        assert out[key] > 0
    assert out["spans_exported"] > 0


def test_instrumentation_paired_ours():
    """Paired rounds (bare and instrumented alternated in one process) for our instrumentor: every scenario
    has one figure per round."""
    result = subprocess.run([sys.executable, "-m", "bench.instr_paired", "ours", "2", "5", "3", "2", "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("openai_chat", "openai_stream_2", "openai_stream_4", "anthropic_messages", "anthropic_stream_2",
                "anthropic_stream_4"):
        assert len(out[key]) == 2, key


def test_instrumentation_worker_floor():
    """The floor figures: the SDK span alone, our stream wrapper per event, and our request wrapper's own cost
    beyond its span, measured against a span made by hand with the attributes ours set on the real call."""
    result = subprocess.run([sys.executable, "-m", "bench.instr_worker", "floor", "5", "3", "2", "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("floor_16", "floor_0", "own_openai_chat", "own_anthropic_messages", "event_openai", "event_anthropic",
                "semconv_openai_chat", "semconv_anthropic_messages", "metrics_openai_chat",
                "metrics_anthropic_messages"):
        assert isinstance(out[key], float), key
    # the spans compared carry the canned responses' usage (tokens, cache, reasoning, model, id, tier) and the
    # conventions' server address and port, finish reasons (and Anthropic's required max_tokens)
    assert out["own_openai_chat_attributes"] == 15 and out["own_anthropic_messages_attributes"] == 14
