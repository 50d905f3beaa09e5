"""The records of pricing: a call's usage as priced (`PricedUsage`) and its price (`Price`), shared by the
catalog (`pricing`), its fast path (`fast_pricing`), the collector's stages and the levers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

# The usage fields we price, in `PricedUsage`'s order, with genai-prices' usage keys.
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
              "output_reasoning_tokens", "web_searches", "input_audio_tokens", "cache_audio_read_tokens",
              "output_audio_tokens", "input_image_tokens", "cache_image_read_tokens", "output_image_tokens",
              "input_video_tokens", "output_video_tokens", "storage_searches")
PRICED_FIELDS = len(USAGE_KEYS)  # the fields after them are compaction iterations, priced as a usage of their own


class PricedUsage(NamedTuple):
    """Token counts of one call, as the conventions count them (input includes cache reads and writes; audio,
    image and video tokens are within the input or output they belong to, audio and image cache reads within
    the cache reads). Compaction iterations (Anthropic) are billed apart from the top-level usage: priced as
    a usage of their own and added. (A named tuple: one is made per span, and it is its own memo key.)"""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    web_searches: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    cache_image_read_tokens: int = 0
    output_image_tokens: int = 0
    input_video_tokens: int = 0
    output_video_tokens: int = 0
    file_searches: int = 0
    compaction_input_tokens: int = 0
    compaction_output_tokens: int = 0
    compaction_cache_read_tokens: int = 0
    compaction_cache_write_tokens: int = 0

    def priced_fields(self) -> tuple[int, ...]:
        """The fields priced under genai-prices' usage keys (`USAGE_KEYS`), in their order."""
        return self[:PRICED_FIELDS]

    def compaction(self) -> tuple[int, ...] | None:
        """The compaction iterations' usage as values to price, or None."""
        if not (self.compaction_input_tokens or self.compaction_output_tokens):
            return None
        return (self.compaction_input_tokens, self.compaction_output_tokens, self.compaction_cache_read_tokens,
                self.compaction_cache_write_tokens) + (0,) * (PRICED_FIELDS - 4)


assert PricedUsage._fields[:4] == ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
assert PricedUsage._fields[PRICED_FIELDS:PRICED_FIELDS + 2] == ("compaction_input_tokens", "compaction_output_tokens")


@dataclass(slots=True)
class Price:
    status: str  # priced | unpriced
    total: Decimal | None = None
    input: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    output: Decimal | None = None
    cache_savings: Decimal | None = None
    note: str = ""
    source: str = ""
    model_id: str = ""
    fees: Decimal | None = None  # per-call and per-tool-call fees (web and file searches): in the total only


def unpriced(note: str) -> Price:
    return Price("unpriced", note=note)
