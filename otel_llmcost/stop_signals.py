"""Foreground commands (the collector, the sandbox) run until SIGTERM or Ctrl-C."""
from __future__ import annotations

import signal
import threading
import time


def wait_for_stop(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT), poll: float = 0.1) -> None:
    """Blocks the main thread until one of `signals` arrives, then puts the previous handlers back.

    The handler only appends to a list: it runs on the main thread, between any two of its bytecodes, so a
    handler that takes a lock (`threading.Event.set`) waits forever when the main thread holds that lock at that
    moment (inside `Event.wait`). A short sleep rather than `signal.pause()`, which would miss a signal that
    arrives between the check and the pause."""
    if threading.current_thread() is not threading.main_thread():  # handlers install only there
        raise RuntimeError("wait_for_stop() runs on the main thread")
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in signals}
    try:
        while not received:
            time.sleep(poll)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
