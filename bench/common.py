"""What every benchmark shares: subprocess helpers, statistics, markdown tables, the machine description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".bench-data"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def percentile(values, q: float) -> float:
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def spread(values) -> str:
    """min–max of the rounds, the noise that goes next to a median."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{min(values):.1f}…{max(values):.1f}"


def table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> str:
    dists = ("openai", "anthropic", "httpx2", "opentelemetry-sdk", "wrapt", "chdb", "clickhouse-connect",
             "genai-prices", "protobuf", "grpcio", "otel-llmcost")
    versions = ", ".join(f"{d} {version(d)}" for d in dists)
    return (f"{os.cpu_count()} cores ({cpu_model()}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}; {versions}")


def run_json(cmd: list[str], timeout: float = 600, env: dict | None = None) -> dict | None:
    """Runs a worker that prints one JSON line last; None (and the reason logged) when it fails."""
    import json

    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        log(f"timed out: {' '.join(cmd)}")
        return None
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        log(f"failed ({result.returncode}): {' '.join(cmd[:4])}: {tail}")
        return {"error": tail or f"exit {result.returncode}"}
    return json.loads(lines[-1])
