"""The budget guard's added cost per call: our instrumentation with the guard on against the same without it.

In one process (`bench/instr_worker.py`'s canned SDK clients, httpx2.MockTransport, a real TracerProvider with a
BatchSpanProcessor), loops with the guard off and on alternate; the guard checks four budgets (all, project,
feature, user) of the call's attribution, read from a local stand-in of the collector's budgets endpoint.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .common import log, median, percentile, table

# Spend at $1 per million tokens: the guard counts this process's calls at that rate, and the bench's thousands of
# calls stay far below the limits (a call over a budget would raise, and end the bench).
BUDGETS = {"budgets": [
    {"scope": scope, "scope_value": value, "period": period, "amount_usd": "1000", "limit_tokens": 10**12,
     "spent_usd": "1", "spent_tokens": 10**6, "month_usd": "1", "month_tokens": 10**6}
    for scope, value, period in (("all", "", "month"), ("project", "shop", "day"), ("feature", "search", "hour"),
                                 ("user", "u-1", "day"))]}


class _Budgets(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(BUDGETS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def own_check(active, n: int) -> float:
    """µs of CPU of one `before_call` of a call within its budgets (a non-recording span, a real attribution)."""
    import time

    from opentelemetry.trace import INVALID_SPAN

    from otel_llmcost import names

    attributes = {names.PROJECT: "shop", names.FEATURE: "search", names.USER_ID: "u-1", names.REQUEST_MODEL: "m"}
    body = {"model": "m"}
    active.poll()
    results = []
    for _ in range(5):
        start = time.process_time_ns()
        for _ in range(n):
            active.before_call(INVALID_SPAN, attributes, body)
        results.append((time.process_time_ns() - start) / n / 1000)
    return median(results)


def run(rounds: int = 5, quick: bool = False) -> str:
    import otel_llmcost
    from otel_llmcost import guard

    from . import instr_worker

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Budgets)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    instr_worker.setup_tracing("ours")
    oai, ant = instr_worker.make_clients(2)
    calls = instr_worker.scenarios(oai, ant)
    n = 30 if quick else 300
    added: dict[str, list[float]] = {"openai_chat": [], "anthropic_messages": []}
    bare: dict[str, list[float]] = {key: [] for key in added}
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with otel_llmcost.attributes(project="shop", feature="search", user_id="u-1"):
        for r in range(rounds * 2):
            log(f"guard round {r + 1}/{rounds * 2}")
            for key in added:
                guard.disable()
                off = instr_worker.time_per_call(calls[key], n)
                guard.enable(endpoint, action="raise", poll_seconds=3600)
                on = instr_worker.time_per_call(calls[key], n)
                bare[key].append(off)
                added[key].append(on - off)
    check = own_check(guard.active if guard.active else guard.enable(endpoint, poll_seconds=3600), n * 100)
    guard.disable()
    server.shutdown()
    rows = [["instrumented call, guard off (µs CPU)"] + [f"{median(bare[k]):.0f}" for k in added],
            ["added by the guard (µs CPU; interquartile range)"] + [
                f"{median(v):+.1f} ({percentile(v, 0.25):.1f}…{percentile(v, 0.75):.1f})" for v in added.values()],
            ["the guard's own check alone (µs CPU, tight loop)", f"{check:.2f}", f"{check:.2f}"]]
    return (table(["budget guard", "OpenAI chat", "Anthropic messages"], rows)
            + f"\n\nIn one process, {rounds * 2} rounds of a loop with the guard off then on, {n} calls per loop "
              f"(median of 3 timed loops each), four budgets matching the call's attribution, the budgets polled "
              f"once (the cached check is what every call pays).")


if __name__ == "__main__":
    print(run())
