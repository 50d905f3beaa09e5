"""Zero-code: an unchanged app run under `opentelemetry-instrument` (console exporter) gets our spans, for
OpenAI (sync stream included) and Anthropic (whose own native tracing is on there: still one span with usage)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otel_llmcost import names
from otel_llmcost.sandbox import Sandbox

APP = textwrap.dedent(
    """
    import os, anthropic, openai
    oai = openai.OpenAI(base_url=os.environ["SANDBOX"] + "/v1", api_key="x", max_retries=0)
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    for _ in oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=5, stream=True):
        pass
    client = anthropic.Anthropic(base_url=os.environ["SANDBOX"], api_key="x", max_retries=0)
    client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, system="Be brief.",
                           messages=[{"role": "user", "content": "hi"}])
    """
)


def _spans_from_console(text: str) -> list[dict]:
    """The console exporter prints one JSON object per span."""
    spans, depth, start = [], 0, None
    for i, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(text[start : i + 1])
                except ValueError:
                    continue
                if "attributes" in obj and "name" in obj:
                    spans.append(obj)
    return spans


@pytest.mark.skipif(not shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent)),
                    reason="opentelemetry-instrument is not installed beside this Python")
def test_opentelemetry_instrument_with_no_code_change(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    with Sandbox() as sandbox:
        env = {
            **os.environ,
            "SANDBOX": sandbox.url,
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "zero-code",
            "OTEL_LLMCOST_PROJECT": "autoinstrumented",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx",
        }
        result = subprocess.run(
            [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr
    spans = _spans_from_console(result.stdout)
    ours = [s for s in spans if s["attributes"].get(names.OPERATION) == "chat"]
    assert [s["attributes"][names.PROVIDER] for s in ours] == ["openai", "openai", "anthropic"]
    for span in ours:
        assert span["attributes"][names.PROJECT] == "autoinstrumented"
    assert ours[0]["attributes"][names.INPUT_TOKENS] > 0 and ours[2]["attributes"][names.INPUT_TOKENS] > 0
    assert ours[1]["attributes"][names.USAGE_MISSING] is True  # a stream without include_usage says so
    assert ours[2]["attributes"][names.PREFIX_LENGTH] == len("Be brief.")
    # one call, one span with usage: Anthropic's own span is not started inside ours
    assert ours[1]["attributes"][names.USAGE_ESTIMATED] is True  # its tokens estimated from the text
    assert len([s for s in spans if names.INPUT_TOKENS in s["attributes"]
                and names.USAGE_ESTIMATED not in s["attributes"]]) == 2
    assert not [s for s in spans if s["name"].startswith("anthropic.")]
