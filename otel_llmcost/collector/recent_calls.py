"""The memory of the spans stored lately, so that a span re-sent soon after is left out without asking the store."""

from __future__ import annotations

from typing import Any

from .normalize import Call


class RecentCalls:
    """Keys of the spans stored lately, so that a span re-sent soon after is left out without asking the store.
    Bounded: the newest `capacity` keys at least, twice that at most. A key is trace id + span id (48 hex
    digits). What it has forgotten, and what other collector processes stored, `Pipeline.settle` asks the
    store about."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        # Two generations: `keys` fills up to `capacity`, then becomes `older` (the one before is dropped). A
        # key is looked up in both; nothing is ever copied or trimmed key by key.
        self.keys: dict[str, None] = {}
        self.older: dict[str, None] = {}

    @staticmethod
    def span_key(trace_id: str, span_id: str) -> str:
        return trace_id + span_id

    def __contains__(self, key: str) -> bool:
        return key in self.keys or key in self.older

    def take(self, items: list[tuple[Call, Any]]) -> tuple[list[tuple[Call, Any]], list[Call]]:
        """The items whose span was not stored lately, nor already met earlier in `items` (remembered from now
        on), and the calls left out."""
        kept, left_out, keys, older = [], [], self.keys, self.older
        batch: dict[str, None] = {}  # (a dict: remembered in the order met)
        for item in items:
            call = item[0]
            span_key = call.trace_id + call.span_id  # span_key(), inlined: once per span
            if span_key in keys or span_key in older or span_key in batch:
                left_out.append(call)
                continue
            batch[span_key] = None
            kept.append(item)
        self.remember_keys(batch)
        return kept, left_out

    def remember_keys(self, keys) -> None:
        self.keys.update(dict.fromkeys(keys))
        if len(self.keys) >= self.capacity:
            self.older, self.keys = self.keys, {}

    def all_keys(self) -> list[str]:
        """Every key remembered, oldest first."""
        return [*self.older, *self.keys]
