"""The oldest supported majors: `openai` 1.x and `anthropic` 0.x, in a venv of their own.

The venv is made once with `python -m venv` + pip and cached under `.venv-compat/` at the repository root
(remade when `REQUIREMENTS` change); the instrumentation tests that do not need today's SDKs run there in a
subprocess. Skipped, with pip's own words, only when pip cannot install the packages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-compat"
REQUIREMENTS = ["openai>=1.0,<2", "anthropic>=0.30,<1", "opentelemetry-instrumentation-httpx", "pytest>=8"]
TESTS = ["tests/test_instr_streams.py", "tests/test_instr_api.py", "tests/test_instr_http.py",
         "tests/test_instr_autoinstrument.py"]


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


@pytest.fixture(scope="module")
def compat_python() -> Path:
    marker = VENV / "llmcost-requirements.txt"
    wanted = "\n".join(REQUIREMENTS + ["-e ."])
    if marker.exists() and marker.read_text() == wanted and _python().exists():
        return _python()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
    pip = subprocess.run(
        [str(_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS, "-e", str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )
    if pip.returncode != 0:
        pytest.skip(f"pip could not install {REQUIREMENTS}: {pip.stderr.strip()[-600:]}")
    marker.write_text(wanted)
    return _python()


def test_oldest_supported_sdks(compat_python):
    versions = subprocess.run(
        [str(compat_python), "-c", "import openai, anthropic; print(openai.__version__, anthropic.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert versions[0].startswith("1.") and versions[1].startswith("0."), versions
    result = subprocess.run(
        [str(compat_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, f"openai {versions[0]}, anthropic {versions[1]}:\n{result.stdout[-6000:]}"
