"""Separate virtual environments for the peers, created and cached by the harness (never the project's .venv).

Each peer gets `.venv-bench-<peer>` next to the project, with the same `openai` and `anthropic` versions as
the project's venv, so that added microseconds per call compare like with like. A stamp file records what
was installed; a venv whose stamp matches is reused as is.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Pins that work together (checked November 2026); see BENCHMARKS.md for why each one is there.
PEERS: dict[str, dict] = {
    "contrib": {
        "label": "official contrib openai-v2",
        "packages": [
            "opentelemetry-instrumentation-openai-v2==2.4b0",
            # 2.4b0 fails to import with opentelemetry-util-genai >= 1.2b0
            "opentelemetry-util-genai==1.1b0",
            # 2.4b0 imports httpx, which openai 3.x (built on httpx2) no longer pulls in
            "httpx",
        ],
        "dist": "opentelemetry-instrumentation-openai-v2",
    },
    "openllmetry": {
        "label": "OpenLLMetry",
        "packages": [
            "opentelemetry-instrumentation-openai==0.62.4",
            "opentelemetry-instrumentation-anthropic==0.62.4",
        ],
        "dist": "opentelemetry-instrumentation-openai",
    },
    "openlit": {
        "label": "OpenLIT",
        # openlit 1.45.0 declares openai<3 and anthropic<1: its other requirements are installed as declared,
        # then openlit itself without dependencies, over the same SDKs as everyone else.
        "packages": [
            "boto3>=1.34,<2", "opentelemetry-api>=1.38,<2", "opentelemetry-exporter-otlp>=1.38,<2",
            "opentelemetry-instrumentation>=0.52b0,<1", "opentelemetry-semantic-conventions>=0.59b0,<1",
            *[f"opentelemetry-instrumentation-{name}>=0.52b0,<1" for name in (
                "aiohttp-client", "asgi", "django", "falcon", "fastapi", "flask", "httpx", "pyramid",
                "requests", "starlette", "tornado", "urllib", "urllib3")],
            "pydantic>=2,<3", "requests>=2.26,<3", "schedule>=1.2.2,<2", "xmltodict>=0.13,<2",
        ],
        "no_deps": ["openlit==1.45.0"],
        "dist": "openlit",
    },
}


def sdk_pins() -> list[str]:
    """The SDK versions of the project's own venv (the one running this), pinned in every peer venv."""
    pins = []
    for dist in ("openai", "anthropic"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins + ["opentelemetry-sdk", "psutil"]


def venv_dir(peer: str) -> Path:
    return ROOT / f".venv-bench-{peer}"


def venv_python(peer: str) -> Path:
    return venv_dir(peer) / "bin" / "python"


def ensure(peer: str, log=sys.stderr) -> tuple[Path | None, str]:
    """(python of the peer's venv, "") once installed, or (None, why not)."""
    spec = PEERS[peer]
    wanted = sdk_pins() + spec["packages"]
    no_deps = spec.get("no_deps", [])
    stamp_text = json.dumps([wanted, no_deps])
    directory = venv_dir(peer)
    stamp = directory / ".bench-stamp"
    python = venv_python(peer)
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return python, ""
    failed = directory / ".bench-failed"
    if failed.exists() and failed.read_text().startswith(hashlib.sha1(stamp_text.encode()).hexdigest()):
        return None, failed.read_text().split("\n", 1)[1]
    print(f"[bench] creating {directory.name}: {' '.join(wanted + no_deps)}", file=log, flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, capture_output=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *wanted],
            capture_output=True, text=True, timeout=900,
        )
        if result.returncode == 0 and no_deps:
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", *no_deps],
                capture_output=True, text=True, timeout=900,
            )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"venv creation failed: {exc}"
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        why = "pip install failed: " + (" / ".join(lines[-3:]) if lines else f"exit {result.returncode}")
        failed.write_text(hashlib.sha1(stamp_text.encode()).hexdigest() + "\n" + why)
        return None, why
    stamp.write_text(stamp_text)
    return python, ""


def installed_version(python: Path, dist: str) -> str:
    code = f"from importlib import metadata; print(metadata.version({dist!r}))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return result.stdout.strip() or "?"


if __name__ == "__main__":
    for name in (sys.argv[1:] or PEERS):
        print(name, ensure(name))
