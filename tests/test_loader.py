"""The loader in this process (spool -> pipeline -> the embedded store): how it manages garbage collection."""

from __future__ import annotations

import gc
import time
import weakref

from otel_llmcost.collector.loader import Loader
from otel_llmcost.collector.pipeline import Pipeline
from otel_llmcost.collector.spool import Spool

from intake_support import llm_spans, request_bytes


class Node:
    """An object in a reference cycle: only a garbage collection frees it."""

    def __init__(self) -> None:
        self.me = self


def wait_for(predicate, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_the_loader_collects_garbage_after_each_insert_and_gives_back_the_thresholds(empty_store, tmp_path):
    """Automatic collections are made rare while the loader runs (they would walk the batch being built); it
    collects after each insert instead, so cyclic garbage made anywhere in the process is still freed soon."""
    thresholds = gc.get_threshold()
    spool = Spool(tmp_path / "spool")
    loader = Loader(Pipeline(empty_store), spool, batch_seconds=0.05)
    loader.start()
    try:
        assert wait_for(lambda: gc.get_threshold()[0] >= 100_000)
        cycle = Node()
        freed = weakref.ref(cycle)
        del cycle
        spool.append(request_bytes(llm_spans(3, feature="loader-gc")))
        assert wait_for(lambda: empty_store.query(
            "SELECT count() FROM llm_spans WHERE feature = 'loader-gc'").rows == [(3,)])
        assert wait_for(lambda: freed() is None, timeout=5), "no collection followed the insert"
    finally:
        loader.stop(drain_seconds=1)
        spool.close()
    assert not loader.is_alive() and loader.failed is None
    assert gc.get_threshold() == thresholds


def test_inserts_stay_batch_seconds_apart_and_a_caught_up_loader_does_not_hold_the_tail(empty_store, tmp_path):
    """A call after a quiet spell (or the tail of a backlog) is stored as soon as the loader has read it, not a
    whole `batch_seconds` later; the next one waits until `batch_seconds` after that insert began."""
    def stored(feature: str) -> int:
        return empty_store.query(f"SELECT count() FROM llm_spans WHERE feature = '{feature}'").rows[0][0]

    spool = Spool(tmp_path / "spool")
    loader = Loader(Pipeline(empty_store), spool, batch_seconds=30)
    loader.start()
    try:
        spool.append(request_bytes(llm_spans(3, feature="after-quiet")))
        assert wait_for(lambda: stored("after-quiet") == 3, timeout=15), "held for the batch timer"
        spool.append(request_bytes(llm_spans(2, feature="right-after")))
        time.sleep(2)
        assert stored("right-after") == 0  # a second insert this soon would be one per request under load
    finally:
        loader.stop(drain_seconds=5)  # stopping stores what was read
        spool.close()
    assert stored("right-after") == 2 and loader.failed is None


def test_recent_calls_remember_at_least_the_newest_capacity_keys_and_at_most_twice_that():
    from otel_llmcost.collector.recent_calls import RecentCalls

    class Call:
        def __init__(self, i: int) -> None:
            self.trace_id, self.span_id, self.response_id = f"{i:032x}", f"{i:016x}", f"resp-{i}"

    recent = RecentCalls(capacity=10)  # one key per call: its span
    for start in range(0, 40, 3):
        kept, left_out = recent.take([(Call(i), None) for i in range(start, start + 3)])
        assert len(kept) == 3 and not left_out
        remembered = recent.all_keys()
        assert 10 <= len(remembered) <= 20 + 2 or start < 9  # (a take of 3 may pass the capacity by 2)
        newest = [RecentCalls.span_key(f"{i:032x}", f"{i:016x}") for i in range(max(start - 7, 0), start + 3)]
        assert all(key in recent for key in newest)  # the newest 10 keys, across the two generations
    # calls among the newest are left out (both in the older generation by now); one long forgotten is let in
    again = [Call(41), Call(33), Call(0)]
    kept, left_out = recent.take([(call, None) for call in again])
    assert [c.span_id for c, _ in kept] == [f"{0:016x}"] and {c.span_id for c in left_out} == {f"{41:016x}", f"{33:016x}"}
