"""Separate virtual environments for the peer instrumentations (never the project's .venv), created once and
cached under `.venv-peers/<peer>` (override the folder with OTEL_LLMCOST_PEER_VENVS).

Each holds the same `openai` and `anthropic` versions as the project's venv, the peer's packages pinned to
versions that work with them (checked November 2026), the OpenTelemetry SDK and the OTLP/HTTP exporter.
A stamp records what was installed; a venv whose stamp matches is reused as is, and a failed install is
remembered (with pip's reason) so that the tests skip quickly, saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = Path(os.environ.get("OTEL_LLMCOST_PEER_VENVS") or ROOT / ".venv-peers")

PEERS: dict[str, dict] = {
    "contrib": {
        "label": "official contrib opentelemetry-instrumentation-openai-v2",
        # 2.4b0 fails to import with opentelemetry-util-genai >= 1.2b0, and imports httpx, which openai 3.x
        # (built on httpx2) no longer pulls in.
        "packages": ["opentelemetry-instrumentation-openai-v2==2.4b0", "opentelemetry-util-genai==1.1b0", "httpx"],
    },
    "openllmetry": {
        "label": "OpenLLMetry",
        "packages": ["opentelemetry-instrumentation-openai==0.62.4", "opentelemetry-instrumentation-anthropic==0.62.4"],
    },
    "openlit": {
        "label": "OpenLIT",
        # openlit 1.45.0 declares openai<3 and anthropic<1: its other requirements are installed as declared,
        # then openlit itself without dependencies, over the same SDKs as everyone else.
        "packages": [
            "boto3>=1.34,<2", "opentelemetry-instrumentation>=0.52b0,<1",
            *[f"opentelemetry-instrumentation-{name}>=0.52b0,<1" for name in (
                "aiohttp-client", "asgi", "django", "falcon", "fastapi", "flask", "httpx", "pyramid",
                "requests", "starlette", "tornado", "urllib", "urllib3")],
            "pydantic>=2,<3", "requests>=2.26,<3", "schedule>=1.2.2,<2", "xmltodict>=0.13,<2",
        ],
        "no_deps": ["openlit==1.45.0"],
    },
    "openinference": {
        "label": "OpenInference",
        "packages": ["openinference-instrumentation-openai==0.1.66", "openinference-instrumentation-anthropic==3.1.0"],
    },
}


def common_packages() -> list[str]:
    pins = []
    for dist in ("openai", "anthropic"):
        pins.append(f"{dist}=={metadata.version(dist)}")
    return pins + ["opentelemetry-sdk>=1.38", "opentelemetry-exporter-otlp-proto-http>=1.38"]


def python_of(peer: str) -> Path:
    return BASE / peer / "bin" / "python"


def ensure(peer: str) -> tuple[Path | None, str]:
    """(python of the peer's venv, "") once installed, or (None, why not)."""
    spec = PEERS[peer]
    wanted = common_packages() + spec["packages"]
    no_deps = spec.get("no_deps", [])
    stamp_text = json.dumps([wanted, no_deps])
    directory = BASE / peer
    python = python_of(peer)
    stamp = directory / ".peer-stamp"
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return python, ""
    failed = directory / ".peer-failed"
    digest = hashlib.sha1(stamp_text.encode()).hexdigest()
    if failed.exists() and failed.read_text().startswith(digest):
        return None, failed.read_text().split("\n", 1)[1]
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, capture_output=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *wanted],
                                capture_output=True, text=True, timeout=900)
        if result.returncode == 0 and no_deps:
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", *no_deps],
                capture_output=True, text=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"venv creation failed: {exc}"
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        why = "pip install failed: " + (" / ".join(lines[-3:]) if lines else f"exit {result.returncode}")
        directory.mkdir(parents=True, exist_ok=True)
        failed.write_text(digest + "\n" + why)
        return None, why
    stamp.write_text(stamp_text)
    return python, ""


if __name__ == "__main__":
    for name in sys.argv[1:] or PEERS:
        print(name, ensure(name), flush=True)
