"""OTLP spans -> LLM calls: one `Call` per span that describes an LLM API call, whichever instrumentation
made it (ours, the official contrib one, OpenLLMetry, OpenLIT, OpenInference, the Anthropic SDK's own).

Attribute names are in flux, so every spelling is accepted here and nowhere else:

| fact | ours / current GenAI conventions | deprecated GenAI, OpenLLMetry | OpenInference | others |
|---|---|---|---|---|
| provider | gen_ai.provider.name | gen_ai.system | llm.provider, llm.system | |
| model | gen_ai.request.model, gen_ai.response.model | llm.request.model, llm.response.model | llm.model_name, llm.request.model_name, llm.response.model_name | |
| input | gen_ai.usage.input_tokens | gen_ai.usage.prompt_tokens, llm.usage.prompt_tokens | llm.token_count.prompt | |
| output | gen_ai.usage.output_tokens | gen_ai.usage.completion_tokens, llm.usage.completion_tokens | llm.token_count.completion | |
| cache read | gen_ai.usage.cache_read.input_tokens | gen_ai.usage.cache_read_input_tokens | llm.token_count.prompt_details.cache_read | |
| cache write | gen_ai.usage.cache_creation.input_tokens, gen_ai.usage.cache_write.input_tokens (Anthropic SDK) | gen_ai.usage.cache_creation_input_tokens | llm.token_count.prompt_details.cache_write | |
| 1-hour cache writes | llmcost.usage.cache_creation_1h.input_tokens | | | anthropic.usage.cache_creation.ephemeral_1h_input_tokens (Anthropic SDK) |
| reasoning | gen_ai.usage.reasoning.output_tokens | gen_ai.usage.reasoning_tokens, llm.usage.reasoning_tokens | llm.token_count.completion_details.reasoning | |
| service tier | llmcost.response.service_tier | openai.response.service_tier | | anthropic.response.service_tier, gen_ai.openai.response.service_tier |
| audio tokens | llmcost.usage.input_audio_tokens, llmcost.usage.output_audio_tokens | | llm.token_count.prompt_details.audio, llm.token_count.completion_details.audio | |
| image, video tokens, audio and image cache reads, file searches, compaction iterations, speed tier | llmcost.usage.* (`MODALITY_FACTS`), llmcost.response.speed | | | |

Input semantics. The conventions count cache reads and writes inside the input tokens, and so do the Anthropic
SDK's own spans, OpenLLMetry (0.62) and OpenInference (checked with their real packages in
tests/test_peers.py). OpenLIT (1.45) reports Anthropic's raw `input_tokens`, which exclude them: its
Anthropic spans get the cache added. For any other span whose cache tokens exceed its input, the input
evidently excluded them too, and they are added (with a note).

Application-level cache hits (`llmcost.cache_hit.kind`, see `otel_llmcost.record_cache_hit`) are calls the app
did not make: they become a `Call` with `cache_hit_kind` set and, as usage, what the avoided call would have
used; the row stores zero tokens and zero cost, and the price of that usage as `app_cache_savings_usd`.

Values are checked where they are read, so that no span can make a batch fail to insert: a token count that is
not a finite number, or beyond UInt64 (alone, or the input once cache tokens are counted in), makes the span's
usage unknown (stored as `no_usage`, the reason in the note); a prefix length beyond UInt32 is dropped (noted);
a span starting after 2106-02-07 (beyond the rollups' DateTime minutes; DateTime64(9) ends in 2262) or one whose
reading fails is set aside (`SetAside`, a dead letter) instead of being stored.

Private by default: attributes that hold prompt or completion content, or look like a secret (by name, or by a
value such as an `sk-...` key or a bearer token), are not stored, unless the operator keeps them
(`set_kept_attributes`, the collector's `--keep-attributes`).

This module reads one span; `otlp_lite.calls_in` reads a whole request with it, `twins` keeps each call once.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .. import hosts, names
from .price_records import PricedUsage
from .pricing import with_speed

# Each fact with its spellings, most specific first.
PROVIDER_KEYS = (names.PROVIDER, "gen_ai.system", "llm.provider", "llm.system")
OPERATION_KEYS = (names.OPERATION, "llm.request.type")
REQUEST_MODEL_KEYS = (names.REQUEST_MODEL, "llm.request.model", "llm.request.model_name", "llm.model_name")
RESPONSE_MODEL_KEYS = (names.RESPONSE_MODEL, "llm.response.model", "llm.response.model_name")
RESPONSE_ID_KEYS = (names.RESPONSE_ID, "gen_ai.response_id")
INPUT_KEYS = (names.INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_KEYS = (names.OUTPUT_TOKENS, "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens",
               "llm.token_count.completion")
CACHE_READ_KEYS = (names.CACHE_READ_TOKENS, "gen_ai.usage.cache_read_input_tokens", "llm.usage.cache_read_input_tokens",
                   "llm.token_count.prompt_details.cache_read")
CACHE_WRITE_KEYS = (names.CACHE_WRITE_TOKENS, "gen_ai.usage.cache_write.input_tokens",
                    "gen_ai.usage.cache_creation_input_tokens", "llm.usage.cache_creation_input_tokens",
                    "llm.token_count.prompt_details.cache_write")
CACHE_WRITE_1H_KEYS = (names.CACHE_WRITE_1H_TOKENS, "anthropic.usage.cache_creation.ephemeral_1h_input_tokens")
REASONING_KEYS = (names.REASONING_TOKENS, "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens",
                  "llm.token_count.completion_details.reasoning")
WEB_SEARCH_KEYS = ("llmcost.usage.web_search_requests",)
# Usage by modality, tool fees and compaction iterations (ours; OpenInference spells audio tokens too).
INPUT_AUDIO_KEYS = (names.INPUT_AUDIO_TOKENS, "llm.token_count.prompt_details.audio")
OUTPUT_AUDIO_KEYS = (names.OUTPUT_AUDIO_TOKENS, "llm.token_count.completion_details.audio")
INPUT_IMAGE_KEYS = (names.INPUT_IMAGE_TOKENS,)
OUTPUT_IMAGE_KEYS = (names.OUTPUT_IMAGE_TOKENS,)
SPEED_KEYS = (names.SPEED,)
# fact -> (its spellings, its field in PricedUsage): read only when a span has one of them.
MODALITY_FACTS = {
    "input_audio": (INPUT_AUDIO_KEYS, "input_audio_tokens"),
    "cache_read_audio": ((names.CACHE_READ_AUDIO_TOKENS,), "cache_audio_read_tokens"),
    "output_audio": (OUTPUT_AUDIO_KEYS, "output_audio_tokens"),
    "input_image": (INPUT_IMAGE_KEYS, "input_image_tokens"),
    "cache_read_image": ((names.CACHE_READ_IMAGE_TOKENS,), "cache_image_read_tokens"),
    "output_image": (OUTPUT_IMAGE_KEYS, "output_image_tokens"),
    "input_video": ((names.INPUT_VIDEO_TOKENS,), "input_video_tokens"),
    "output_video": ((names.OUTPUT_VIDEO_TOKENS,), "output_video_tokens"),
    "file_searches": ((names.FILE_SEARCH_REQUESTS,), "file_searches"),
    "compaction_input": ((names.COMPACTION_INPUT_TOKENS,), "compaction_input_tokens"),
    "compaction_output": ((names.COMPACTION_OUTPUT_TOKENS,), "compaction_output_tokens"),
    "compaction_cache_read": ((names.COMPACTION_CACHE_READ_TOKENS,), "compaction_cache_read_tokens"),
    "compaction_cache_write": ((names.COMPACTION_CACHE_WRITE_TOKENS,), "compaction_cache_write_tokens"),
}
SERVICE_TIER_KEYS = (names.SERVICE_TIER, "gen_ai.openai.response.service_tier", "anthropic.response.service_tier",
                     "openai.response.service_tier")
USAGE_KEYS = INPUT_KEYS + OUTPUT_KEYS

# Instrumentation scopes whose input tokens exclude cache reads and writes (the provider's raw count).
INPUT_EXCLUDES_CACHE_SCOPES = ("openlit.instrumentation.anthropic",)

# Operations that are LLM API calls (agent and tool spans also carry gen_ai.operation.name).
LLM_OPERATIONS = {"chat", "text_completion", "embeddings", "generate_content", "completion", "responses"}

# Attributes that become columns; the rest go to the `attributes` map (which keeps what reprice needs: the
# service tier, 1-hour cache writes, web searches, the tokens an application cache hit avoided).
PROMOTED = set(PROVIDER_KEYS + OPERATION_KEYS + REQUEST_MODEL_KEYS + RESPONSE_MODEL_KEYS + RESPONSE_ID_KEYS
               + INPUT_KEYS + OUTPUT_KEYS + CACHE_READ_KEYS + CACHE_WRITE_KEYS + REASONING_KEYS + (names.CACHE_HIT_KIND,)
               + names.ATTRIBUTION_KEYS + (names.ERROR_TYPE, names.PREFIX_HASH, names.PREFIX_LENGTH)
               + INPUT_AUDIO_KEYS + OUTPUT_AUDIO_KEYS + INPUT_IMAGE_KEYS + OUTPUT_IMAGE_KEYS)

STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}

# Every spelling -> (fact, rank, is_count, promoted, is_usage): lets one pass over a span's attributes find
# each fact at its most specific spelling (rank 0 is the first of its spellings above). Facts read from a single
# name have one spelling. Text facts are kept as text, counts as sent (`count_of` reads them, noting odd ones).
FACT_SPELLINGS = {
    "provider": PROVIDER_KEYS, "operation": OPERATION_KEYS, "request_model": REQUEST_MODEL_KEYS,
    "response_model": RESPONSE_MODEL_KEYS, "response_id": RESPONSE_ID_KEYS, "input": INPUT_KEYS,
    "output": OUTPUT_KEYS, "cache_read": CACHE_READ_KEYS, "cache_write": CACHE_WRITE_KEYS,
    "cache_write_1h": CACHE_WRITE_1H_KEYS, "reasoning": REASONING_KEYS, "web_searches": WEB_SEARCH_KEYS,
    "service_tier": SERVICE_TIER_KEYS, "cache_hit_kind": (names.CACHE_HIT_KIND,),
    "cache_hit_input": (names.CACHE_HIT_INPUT_TOKENS,), "cache_hit_output": (names.CACHE_HIT_OUTPUT_TOKENS,),
    "error_type": (names.ERROR_TYPE,), "project": (names.PROJECT,), "feature": (names.FEATURE,),
    "user_id": (names.USER_ID,), "prefix_hash": (names.PREFIX_HASH,), "prefix_length": (names.PREFIX_LENGTH,),
    "speed": SPEED_KEYS, **{fact: keys for fact, (keys, _) in MODALITY_FACTS.items()},
}
COUNT_FACTS = {"input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning", "web_searches",
               "cache_hit_input", "cache_hit_output", "prefix_length", *MODALITY_FACTS}
SPELLINGS: dict[str, tuple[str, int, bool, bool, bool]] = {}
for _fact, _keys in FACT_SPELLINGS.items():
    for _rank, _key in enumerate(_keys):
        assert _key not in SPELLINGS, f"{_key} spells two facts"
        SPELLINGS[_key] = (_fact, _rank, _fact in COUNT_FACTS, _key in PROMOTED, _key in USAGE_KEYS)
assert PROMOTED <= SPELLINGS.keys(), "a promoted attribute must be read as a fact"

# Value kinds read straight off the protobuf; arrays, key-value lists and bytes go through `any_value`.
SCALAR_KINDS = frozenset(("string_value", "int_value", "double_value", "bool_value"))

# The ranges of the columns values go to: UInt64 token counts, UInt32 prefix_length, and the timestamp: the
# span's DateTime64(9) holds Int64 nanoseconds (up to 2262-04-11), the rollups' `minute` is a DateTime (UInt32
# seconds: up to 2106-02-07T06:28:15Z), where a later time would not be refused but wrap around.
MAX_COUNT = (1 << 64) - 1
MAX_PREFIX_LENGTH = (1 << 32) - 1
MAX_TIMESTAMP_NS = ((1 << 32) - 60) * 10**9


class AbsurdValue(ValueError):
    """A count no call can have (not a finite number, or beyond its column): the span's usage is unknown."""


class SetAside(ValueError):
    """A span that cannot be stored (a value no column can hold): it goes to the dead letters with this reason."""


# -- privacy: attributes not stored unless kept -----------------------------------------------------------------

# Prompt and completion content, as the GenAI conventions (current and deprecated), OpenLLMetry, OpenLIT and
# OpenInference name it. Span events (where some put content) are never read.
CONTENT_ATTRIBUTES = (
    "gen_ai.prompt", "gen_ai.prompt.*", "gen_ai.completion", "gen_ai.completion.*", "gen_ai.input.messages",
    "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.tool.definitions", "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result", "gen_ai.content.*", "gen_ai.request.messages", "gen_ai.response.messages",
    "llm.prompts", "llm.prompts.*", "llm.completions", "llm.completions.*", "llm.input_messages*",
    "llm.output_messages*", "llm.prompt_template.*", "llm.tools*", "input.value", "output.value",
    "traceloop.entity.input", "traceloop.entity.output", "retrieval.documents*", "embedding.embeddings*",
    "*.content", "*.messages", "*.prompt", "*.completion",
)
# Names of secrets: a name segment (between dots, underscores or dashes) that is one of these.
_SECRET_NAME = re.compile(
    r"(?:^|[._-])(?:api[._-]?key|apikey|x[._-]api[._-]key|authorization|auth[._-]?token|token|access[._-]?token|"
    r"refresh[._-]?token|id[._-]?token|secret|client[._-]?secret|password|passwd|pwd|cookie|set[._-]cookie|"
    r"private[._-]?key|credentials?)(?:$|[._-])", re.I)
# Values that are secrets whatever their name: API keys of the common providers, bearer/basic credentials, JWTs.
_SECRET_VALUE = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,}|\b(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{12,}|\bAKIA[0-9A-Z]{16}\b|"
    r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}|\bxox[abposr]-[A-Za-z0-9-]{10,}|"
    r"\bAIza[0-9A-Za-z_-]{30,}|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")
_CONTENT_NAME = re.compile("|".join(fnmatch.translate(glob) for glob in CONTENT_ATTRIBUTES))
_kept_names: re.Pattern | None = None  # the operator's globs of attributes to keep whatever they hold
_private_names: dict[str, int] = {}  # name -> 0 kept, 1 private by its name, 2 look at the value; bounded

# An attribute not stored (in the place of its value in an `AttributeEntry`).
PRIVATE = object()
# What forgets privacy decisions made before (caches of decoded attributes) when the kept attributes change.
ON_KEPT_ATTRIBUTES_CHANGE: list[Callable[[], None]] = []


def set_kept_attributes(patterns: Iterable[str]) -> None:
    """Attributes (glob patterns of their names, e.g. `gen_ai.input.messages` or `http.request.header.*`) stored
    even though they hold content or look like secrets. Applies to requests read from now on."""
    globs = [p.strip() for p in patterns if p and p.strip()]
    global _kept_names
    _kept_names = re.compile("|".join(fnmatch.translate(glob) for glob in globs)) if globs else None
    _private_names.clear()
    for forget in ON_KEPT_ATTRIBUTES_CHANGE:
        forget()


def is_private(key: str, text: str | None) -> bool:
    """Whether an attribute (its name and its value as text) is kept out of the store."""
    by_name = _private_names.get(key)
    if by_name is None:
        if _kept_names is not None and _kept_names.match(key):
            by_name = 0  # kept, whatever it holds
        else:
            by_name = 1 if _CONTENT_NAME.match(key) or _SECRET_NAME.search(key) else 2
        if len(_private_names) >= 4096:
            _private_names.clear()
        _private_names[key] = by_name
    if by_name != 2:
        return by_name == 1
    return bool(text) and _SECRET_VALUE.search(text) is not None


@dataclass(slots=True, kw_only=True)
class Call:
    """One LLM call, normalized: what the row of `llm_spans` is made of, before pricing. Built by keyword; `to_call`,
    which makes one per span, sets each field by name on a bare instance instead (a keyword constructor matches its
    28 names at every call)."""

    timestamp_ns: int
    duration_ms: float
    trace_id: str
    span_id: str
    parent_span_id: str
    service_name: str
    span_name: str
    scope_name: str
    provider: str
    operation: str
    request_model: str
    response_model: str
    response_id: str
    status_code: str
    error_type: str
    usage: PricedUsage
    has_usage: bool
    service_tier: str
    project: str
    feature: str
    user_id: str
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    # What is stored (the row's `resource_json`): made once per resource by `calls_in`, shared by its spans; from
    # `resource_attributes` when not given.
    resource_json: str = None  # type: ignore[assignment]
    prefix_hash: str = ""
    prefix_length: int = 0
    notes: list[str] = field(default_factory=list)
    # An application-level cache hit: no call made; `usage` is what it avoided.
    cache_hit_kind: str = ""

    def __post_init__(self) -> None:
        if self.resource_json is None:
            self.resource_json = resource_json_of(self.resource_attributes)

    @property
    def model(self) -> str:
        return self.response_model or self.request_model


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def first(attributes: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def token_count(attributes: dict[str, Any], keys: Iterable[str], notes: list[str]) -> int:
    """A token count; odd values (negative, fractional, text) are noted and read as well as they can be."""
    return count_of(first(attributes, keys), notes)


def count_of(value: Any, notes: list[str]) -> int:
    """`token_count` of a value already found. AbsurdValue if it is not a finite number (NaN, infinity, as a
    double or as text) or beyond UInt64."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if value is None:
        return 0
    if isinstance(value, bool):
        notes.append(f"non-numeric token count {value!r}")
        return 0
    if isinstance(value, int):
        if value > MAX_COUNT:
            raise AbsurdValue(f"token count {value} is beyond 2^64")
        if value >= 0:
            return int(value)
    elif isinstance(value, str) and value.strip().isdecimal():  # exactly, beyond a double's 2^53 too
        if int(value) > MAX_COUNT:
            raise AbsurdValue(f"token count {_short(value)!r} is beyond 2^64")
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        notes.append(f"non-numeric token count {_short(value)!r}")
        return 0
    if number != number or number in (float("inf"), float("-inf")):
        raise AbsurdValue(f"token count {_short(value)!r} is not a finite number")
    if number > MAX_COUNT:
        raise AbsurdValue(f"token count {_short(value)!r} is beyond 2^64")
    if number < 0 or number != int(number):
        notes.append(f"odd token count {value!r}")
        return max(int(number), 0)
    return int(number)


def _short(value: Any) -> Any:
    """A value as quoted in a note: long text cut."""
    return value[:40] + "..." if isinstance(value, str) and len(value) > 43 else value


def attributes_of(key_values: Any) -> dict[str, Any]:
    """OTLP key-values as a dict (the last of a repeated key wins); scalars read directly, the hot path."""
    attributes: dict[str, Any] = {}
    scalar = SCALAR_KINDS
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        attributes[kv.key] = getattr(value, kind) if kind in scalar else any_value(value)
    return attributes


def facts_of(attributes: dict[str, Any]) -> tuple[dict[str, Any], bool, bool, dict[str, str]]:
    """`facts_of_entries` of attributes as a dict."""
    return facts_of_entries([attribute_entry(key, value) for key, value in attributes.items()])


# What `facts_of_entries` needs to know of one attribute, worked out once per distinct attribute:
# (key, its fact or None, the spelling's rank, the fact's value (a count as sent, any other fact as text) or
# None, the text kept in the `attributes` column or None (promoted to a column, or private), 1 names usage / 2 a
# cache hit, the value as decoded or PRIVATE).
AttributeEntry = tuple[str, "str | None", int, Any, "str | None", int, Any]


def attribute_entry(key: str, value: Any) -> AttributeEntry:
    text = value if type(value) is str else as_text(value)
    spelling = SPELLINGS.get(key)
    if spelling is None:
        if is_private(key, text):
            return key, None, 0, None, None, 0, PRIVATE
        return key, None, 0, None, text, 0, value
    fact, rank, is_count, promoted, is_usage = spelling
    fact_value = None if value is None else value if is_count else text
    flag = 1 if is_usage else 2 if key == names.CACHE_HIT_KIND else 0
    return key, fact, rank, fact_value, None if promoted else text, flag, value


def facts_of_entries(entries: list[AttributeEntry]) -> tuple[dict[str, Any], bool, bool, dict[str, str]]:
    """In one pass over a span's attributes (`attribute_entry`s, in order): each fact's value (its most
    specific spelling that has a value), whether the span names token usage or an application cache hit (by
    name, even without a value), and the attributes that are not promoted to columns, as text. A key repeated
    in one span reads as in a dict: its last value, in its first place."""
    facts: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    names_usage = names_cache_hit = False
    rest: dict[str, str] = {}
    for key, fact, rank, value, text, flag, _ in entries:
        if text is not None:
            rest[key] = text  # (a repeated key: the last text, in the first place)
        if fact is None:
            continue
        if flag:
            if flag == 1:
                names_usage = True
            else:
                names_cache_hit = True
        best = ranks.get(fact)
        if best == rank:
            # This spelling again, so this key again (rare): read the entries as a dict would keep them.
            return facts_of_entries(list({entry[0]: entry for entry in entries}.values()))
        if value is None or (best is not None and best < rank):
            continue  # no value, or a more specific spelling was already found
        facts[fact] = value
        ranks[fact] = rank
    return facts, names_usage, names_cache_hit, rest


def resource_json_of(resource: dict[str, str]) -> str:
    """The resource's attributes as the JSON object stored in `llm_spans.resource_json` (in their order)."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def is_llm_call(facts: dict[str, Any], names_usage: bool, names_cache_hit: bool) -> bool:
    """Token usage or a cache hit, or an LLM operation of a provider; not an agent or tool span."""
    return names_usage or names_cache_hit or (facts.get("operation") in LLM_OPERATIONS and "provider" in facts)


def to_call(span: Any, facts: dict[str, Any], names_usage: bool, rest: dict[str, str], service_name: str,
            scope_name: str, resource: dict[str, str], resource_json: str | None = None) -> Call:
    notes: list[str] = []
    get = facts.get
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start > MAX_TIMESTAMP_NS:
        raise SetAside(f"start time {start} ns is after 2106-02-07, beyond the rollups' minutes (DateTime)")
    cache_hit_kind = get("cache_hit_kind", "")
    try:
        if cache_hit_kind:
            # What the avoided call would have used: priced as the savings, never as a cost.
            usage = PricedUsage(input_tokens=count_of(get("cache_hit_input"), notes),
                                output_tokens=count_of(get("cache_hit_output"), notes))
            has_usage = True
        else:
            usage = usage_of(facts, scope_name, notes)
            has_usage = names_usage
    except AbsurdValue as exc:
        # Unknown, never zero: no usage and no cost, flagged, the reason in the note.
        notes.append(f"token usage unknown: {exc}")
        usage, has_usage = _NO_USAGE, False
    prefix_length = get("prefix_length", 0)
    if type(prefix_length) is not int or not 0 <= prefix_length <= MAX_PREFIX_LENGTH:
        try:
            prefix_length = count_of(prefix_length, notes)
        except AbsurdValue as exc:
            notes.append(f"prefix length dropped: {exc}")
            prefix_length = 0
        if prefix_length > MAX_PREFIX_LENGTH:
            notes.append(f"prefix length {prefix_length} is beyond 2^32: dropped")
            prefix_length = 0
    provider = get("provider", "").lower()
    # (our instrumentation decided the provider with the app's own settings)
    if names.SERVER_ADDRESS in rest and scope_name != names.SCOPE:
        provider = provider_at(provider, rest)
    call = _bare_call(Call)  # (every field set by name below: see Call)
    call.timestamp_ns = start
    call.duration_ms = (end - start) / 1e6 if end > start else 0.0
    call.trace_id = span.trace_id.hex()
    call.span_id = span.span_id.hex()
    call.parent_span_id = span.parent_span_id.hex()
    call.service_name = service_name
    call.span_name = span.name
    call.scope_name = scope_name
    call.provider = provider
    call.operation = get("operation", "")
    call.request_model = get("request_model", "")
    call.response_model = get("response_model", "")
    call.response_id = get("response_id", "")
    call.status_code = STATUS_NAMES.get(span.status.code, "UNSET")
    call.error_type = get("error_type", "")
    call.usage = usage
    call.has_usage = has_usage
    call.service_tier = service_tier_of(facts)
    call.project = get("project", "")
    call.feature = get("feature", "")
    call.user_id = get("user_id", "")
    call.attributes = rest
    call.resource_attributes = resource
    call.resource_json = resource_json_of(resource) if resource_json is None else resource_json
    call.prefix_hash = get("prefix_hash", "")
    call.prefix_length = prefix_length
    call.notes = notes
    call.cache_hit_kind = cache_hit_kind
    return call


_bare_call = object.__new__


# (provider, server.address, server.port, the host mapping) -> the provider a call is stored and priced as.
_PROVIDERS_AT: dict[tuple[str, str, str, str], str] = {}


def provider_at(provider: str, attributes: dict[str, str]) -> str:
    """Another instrumentation's provider for a call to `server.address`: a self-hosting server's name for
    loopback, private networks and known self-hosting servers (`otel_llmcost.hosts`; the collector's
    `OTEL_LLMCOST_PROVIDER_HOSTS` first, `host=hosted` keeps the span's provider). When it differs, the span's
    own provider is kept in the attributes as `llmcost.provider.reported`."""
    key = (provider, attributes[names.SERVER_ADDRESS], attributes.get("server.port", ""),
           os.environ.get(hosts.HOSTS_ENV, ""))
    found = _PROVIDERS_AT.get(key)
    if found is None:
        host = key[1].lower()
        found = hosts.named_provider(host) or ""
        if not found:
            port = key[2]
            found = hosts.self_hosted_provider(host, int(port) if port.isdigit() else None) or provider
        elif found == hosts.HOSTED:
            found = provider
        if len(_PROVIDERS_AT) >= 4096:
            _PROVIDERS_AT.clear()
        _PROVIDERS_AT[key] = found
    if found != provider:
        attributes[names.REPORTED_PROVIDER] = provider
    return found


def usage_of(facts: dict[str, Any], scope_name: str, notes: list[str]) -> PricedUsage:
    # count_of of each count, in this order (the notes' order); a plain count, nearly always, is taken as is
    # without the call (once per count per span).
    get = facts.get
    v = get("input", 0)
    input_tokens = v if type(v) is int and v >= 0 else count_of(v, notes)
    v = get("cache_read", 0)
    cache_read = v if type(v) is int and v >= 0 else count_of(v, notes)
    v = get("cache_write", 0)
    cache_write = v if type(v) is int and v >= 0 else count_of(v, notes)
    if cache_read + cache_write and scope_name.startswith(INPUT_EXCLUDES_CACHE_SCOPES):
        input_tokens += cache_read + cache_write  # known to report Anthropic's raw input (cache excluded)
    elif cache_read + cache_write > input_tokens:
        # Input tokens that exclude the cache (Anthropic's raw `input_tokens`): the conventions count it in.
        notes.append(f"input tokens {input_tokens} excluded cache reads and writes: counted them in")
        input_tokens += cache_read + cache_write
    if input_tokens > MAX_COUNT:
        raise AbsurdValue(f"input tokens with the cache counted in ({input_tokens}) are beyond 2^64")
    v = get("output", 0)
    output_tokens = v if type(v) is int and v >= 0 else count_of(v, notes)
    v = get("cache_write_1h", 0)
    cache_write_1h = min(v if type(v) is int and v >= 0 else count_of(v, notes), cache_write)
    v = get("reasoning", 0)
    reasoning = v if type(v) is int and v >= 0 else count_of(v, notes)
    v = get("web_searches", 0)
    web_searches = v if type(v) is int and v >= 0 else count_of(v, notes)
    usage = _new_usage(PricedUsage, (input_tokens, output_tokens, cache_read, cache_write, cache_write_1h, reasoning,
                                     web_searches) + _NO_MORE_USAGE)
    if facts.keys().isdisjoint(MODALITY_FACTS):
        return usage  # (nearly always: text tokens only)
    return usage._replace(**{field: count_of(facts[fact], notes) for fact, (_, field) in MODALITY_FACTS.items()
                             if fact in facts})


def service_tier_of(facts: dict[str, Any]) -> str:
    """The tier a call is priced at: the service tier, with the speed tier when it is not the standard one."""
    tier = facts.get("service_tier", "")
    speed = facts.get("speed")
    return tier if speed is None else with_speed(tier, speed)


def stored_usage(record: dict[str, Any]) -> PricedUsage:
    """The usage the collector priced, from a stored row's columns (`input_tokens`, ..., `output_image_tokens`)
    and `attributes` (which keep the rest): what reprice prices again. The token columns count compaction
    iterations in; the usage keeps them apart. An application cache hit's usage is the avoided call's."""
    attributes = record.get("attributes") or {}
    notes: list[str] = []
    if record.get("cache_hit_kind"):
        return PricedUsage(input_tokens=token_count(attributes, FACT_SPELLINGS["cache_hit_input"], notes),
                           output_tokens=token_count(attributes, FACT_SPELLINGS["cache_hit_output"], notes))
    facts = {fact: count_of(value, notes) for fact, (keys, _) in MODALITY_FACTS.items()
             if (value := first(attributes, keys)) is not None}
    for fact, column in (("input_audio", "input_audio_tokens"), ("output_audio", "output_audio_tokens"),
                         ("input_image", "input_image_tokens"), ("output_image", "output_image_tokens")):
        if record.get(column):
            facts[fact] = record[column]
    get = facts.get
    write = record["cache_write_tokens"] - get("compaction_cache_write", 0)
    usage = PricedUsage(
        input_tokens=record["input_tokens"] - get("compaction_input", 0),
        output_tokens=record["output_tokens"] - get("compaction_output", 0),
        cache_read_tokens=record["cache_read_tokens"] - get("compaction_cache_read", 0),
        cache_write_tokens=write,
        cache_write_1h_tokens=min(token_count(attributes, CACHE_WRITE_1H_KEYS, notes), write),
        reasoning_tokens=record["reasoning_tokens"],
        web_searches=token_count(attributes, WEB_SEARCH_KEYS, notes),
    )
    return usage._replace(**{MODALITY_FACTS[fact][1]: value for fact, value in facts.items()})


def stored_service_tier(attributes: dict[str, str]) -> str:
    """`service_tier_of` a stored row's attributes."""
    tier = as_text(first(attributes, SERVICE_TIER_KEYS))
    speed = first(attributes, SPEED_KEYS)
    return tier if speed is None else with_speed(tier, speed)


_new_usage = tuple.__new__  # (PricedUsage's fields in order, without its keyword-argument constructor)
_NO_USAGE = PricedUsage()
assert PricedUsage._fields[:7] == ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                                   "cache_write_1h_tokens", "reasoning_tokens", "web_searches")
_NO_MORE_USAGE = (0,) * (len(PricedUsage._fields) - 7)
