"""`make demo`: the whole path on this machine, with nothing to start by hand.

1. start the collector on the embedded store (.llmcost/ unless OTEL_LLMCOST_STORE says otherwise),
2. start the provider sandbox on 127.0.0.1 (a local stand-in for the OpenAI and Anthropic APIs),
3. run examples/app.py, unmodified, under `opentelemetry-instrument`, exporting OTLP to the collector,
4. wait until its spans are stored, print the cost report, and stop everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from otel_llmcost.store import RemoteStore, resolve_url

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPECTED_CALLS = 6  # what examples/app.py makes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status < 500


def main() -> int:
    store = resolve_url(os.environ.get("OTEL_LLMCOST_STORE"))
    http_port, grpc_port, sandbox_port = free_port(), free_port(), free_port()
    collector_url = f"http://127.0.0.1:{http_port}"
    started: list[subprocess.Popen] = []
    try:
        print(f"demo: starting the collector (store {store})", flush=True)
        started.append(subprocess.Popen(
            [BIN / "otel-llmcost", "collector", "--store", store,
             "--http-port", str(http_port), "--grpc-port", str(grpc_port)]))
        wait_until(lambda: answers(collector_url + "/llmcost/v1/health"), "the collector")

        print("demo: starting the provider sandbox", flush=True)
        started.append(subprocess.Popen([BIN / "otel-llmcost", "sandbox", "--port", str(sandbox_port)],
                                        stdout=subprocess.DEVNULL))
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        wait_until(lambda: socket.create_connection(("127.0.0.1", sandbox_port), timeout=1).close() or True,
                   "the sandbox")

        remote = RemoteStore(store, collector_url)
        before = remote.query("SELECT count() FROM llm_spans").rows[0][0]

        print("demo: running examples/app.py under opentelemetry-instrument", flush=True)
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": "bookshop-assistant",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "OTEL_LLMCOST_PROJECT": "demo",
            # The sandbox on 127.0.0.1 stands in for the hosted APIs: price its calls as OpenAI's and Anthropic's
            # (a model served from loopback would otherwise be self-hosted, priced only by the price file).
            "OTEL_LLMCOST_PROVIDER_HOSTS": "127.0.0.1=hosted",
            "OPENAI_BASE_URL": f"{sandbox}/v1",
            "ANTHROPIC_BASE_URL": sandbox,
            "OPENAI_API_KEY": "sandbox",
            "ANTHROPIC_API_KEY": "sandbox",
        }
        subprocess.run([BIN / "opentelemetry-instrument", sys.executable, ROOT / "examples" / "app.py"],
                       env=env, check=True)

        wait_until(lambda: remote.query("SELECT count() FROM llm_spans").rows[0][0] >= before + EXPECTED_CALLS,
                   "the spans to be stored")
        print(flush=True)
        subprocess.run([BIN / "otel-llmcost", "report", "--store", store], check=True)
        print(f"\nThe rows are in {store}. Ask anything of them with SQL, e.g.:")
        print(f"  {BIN / 'otel-llmcost'} sql \"SELECT provider, response_model, input_tokens, "
              f"cache_read_tokens, cost_usd FROM llm_spans ORDER BY timestamp DESC LIMIT 10\"")
        print("\nOpen this store in Grafana (dashboards, alert rules, Slack; needs Docker, see grafana/README.md):")
        print("  export OTEL_LLMCOST_AUTH_TOKEN=$(openssl rand -hex 16)")
        print("  .venv/bin/otel-llmcost collector --host 0.0.0.0 &   # also answers Grafana's ClickHouse plugin on :8123")
        print("  LLMCOST_COLLECTOR_TOKEN=$OTEL_LLMCOST_AUTH_TOKEN docker compose -f grafana/docker-compose.collector.yaml up -d")
        print("  .venv/bin/otel-llmcost simulate --days 14 --scenario spike --budgets   # 14 days of rehearsal history")
        print("  then http://127.0.0.1:3000/d/llmcost-overview (admin/admin); alert rules at /alerting/list")
        print("  (with a ClickHouse server instead: grafana/docker-compose.yaml, README.md \"A ClickHouse server\")")
        print("Rehearse the alert rules without Grafana (with a collector running on the store):")
        print("  .venv/bin/otel-llmcost simulate --days 14 --scenario burn --budgets")
        print("  .venv/bin/otel-llmcost alerts backtest --from now-3h")
        return 0
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
