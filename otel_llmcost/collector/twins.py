"""Two spans of one call: which spans describe the same LLM call, and which of them to keep.

Spans of one call: an SDK's own span nested in an instrumentation's (OpenLIT, ours), or two root spans of
separate traces that name the same provider response (OpenLLMetry beside anthropic 2.x's own spans). An id
alone proves nothing (Ollama draws `chatcmpl-<0..998>`): two spans are one call only if they also come from
different instrumentations (one instrumentation makes one span per call), started within TWIN_SLACK_NS of each
other and open at a common moment, and agree on the model and the output tokens.

The same judgement serves a request's calls (`one_per_call`), a batch of rows and the spans already stored
(`pipeline.Pipeline.settle`), each summarized as a `CallSummary`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from .. import names
from .normalize import Call

TWIN_SLACK_NS = 2_000_000_000
# Instrumentation scopes of the provider SDKs' own spans: over a peer's span of the same call when they disagree.
PROVIDER_SDK_SCOPES = ("com.anthropic.sdk",)


class CallSummary(NamedTuple):
    """What judging two spans of one call needs, of a `Call`, a row about to be stored, or a stored row."""
    timestamp_ns: int
    duration_ms: float
    trace_id: str
    span_id: str
    parent_span_id: str
    scope_name: str
    model: str
    response_id: str
    cache_hit_kind: str
    has_usage: bool
    input_tokens: int
    output_tokens: int
    cache_tokens: int  # reads + writes
    reasoning_tokens: int


def summary_of_call(call: Call) -> CallSummary:
    u = call.usage
    return CallSummary(call.timestamp_ns, call.duration_ms, call.trace_id, call.span_id, call.parent_span_id,
                       call.scope_name, call.model, call.response_id, call.cache_hit_kind, call.has_usage,
                       u.input_tokens, u.output_tokens, u.cache_read_tokens + u.cache_write_tokens, u.reasoning_tokens)


def models_agree(a: str, b: str) -> bool:
    """The same model, as far as two spans can tell (a dated response model begins with its request alias)."""
    a, b = a.lower(), b.lower()
    return not a or not b or a.startswith(b) or b.startswith(a)


def overlap(a: CallSummary, b: CallSummary) -> bool:
    """Whether the two spans were open at some common moment (two spans of one call both cover its request)."""
    return a.timestamp_ns <= b.timestamp_ns + b.duration_ms * 1e6 and b.timestamp_ns <= a.timestamp_ns + a.duration_ms * 1e6


def nested(a: CallSummary, b: CallSummary) -> bool:
    return a.trace_id == b.trace_id and (a.parent_span_id == b.span_id or b.parent_span_id == a.span_id)


def same_call(a: CallSummary, b: CallSummary) -> bool:
    """Whether two spans (not the same span) describe one call."""
    if a.cache_hit_kind or b.cache_hit_kind:
        return False  # a cache hit is not a second span of the call it avoided
    if a.response_id and b.response_id and a.response_id != b.response_id:
        return False
    if not nested(a, b):
        if not a.response_id or a.response_id != b.response_id or a.scope_name == b.scope_name:
            return False
        if abs(a.timestamp_ns - b.timestamp_ns) > TWIN_SLACK_NS or not overlap(a, b):
            return False
    if not models_agree(a.model, b.model):
        return False
    return not (a.has_usage and b.has_usage and a.output_tokens and b.output_tokens
                and a.output_tokens != b.output_tokens)


def completeness(a: CallSummary) -> tuple:
    """Orders the spans of one call, truest last: usage at all, then cache and reasoning tokens (a span that
    lacks them dropped them), then ours (it also carries the attribution: project, feature, user), then the
    provider SDK's own span (over another instrumentation's), then the larger count."""
    return (a.has_usage, a.cache_tokens > 0, a.reasoning_tokens > 0, a.scope_name == names.SCOPE,
            a.scope_name.startswith(PROVIDER_SDK_SCOPES), a.input_tokens + a.output_tokens)


def twin_groups(summaries: list[CallSummary]) -> list[list[int]]:
    """Indexes of `summaries` that describe one call, in groups of two or more (each index in one group)."""
    by_span = {(s.trace_id, s.span_id): i for i, s in enumerate(summaries)}
    by_response: dict[str, list[int]] = {}
    for i, s in enumerate(summaries):
        if s.response_id:
            by_response.setdefault(s.response_id, []).append(i)
    pairs = []
    for i, s in enumerate(summaries):
        if s.parent_span_id:
            j = by_span.get((s.trace_id, s.parent_span_id))
            if j is not None and same_call(s, summaries[j]):
                pairs.append((i, j))
    for indexes in by_response.values():
        if len(indexes) > 1 and len({summaries[i].scope_name for i in indexes}) > 1:
            pairs += [(i, j) for n, i in enumerate(indexes) for j in indexes[n + 1:]
                      if not nested(summaries[i], summaries[j]) and same_call(summaries[i], summaries[j])]
    if not pairs:
        return []
    group_of: dict[int, int] = {}
    groups: dict[int, list[int]] = {}
    for i, j in pairs:
        gi, gj = group_of.get(i), group_of.get(j)
        if gi is None and gj is None:
            group_of[i] = group_of[j] = i
            groups[i] = [i, j]
        elif gi is None or gj is None:
            g = gi if gi is not None else gj
            k = i if gi is None else j
            group_of[k] = g
            groups[g].append(k)
        elif gi != gj:
            for k in groups.pop(gj):
                group_of[k] = gi
                groups[gi].append(k)
    return list(groups.values())


def truest(summaries: list[CallSummary], indexes: list[int]) -> int:
    """The index of the span to keep among spans of one call: the most complete; on a tie the earliest (the
    outer span), so the choice does not depend on arrival order."""
    return max(indexes, key=lambda i: (completeness(summaries[i]), -summaries[i].timestamp_ns))


def dropped_twins(items: Sequence[Any], summarize: Callable[[Any], CallSummary]) -> set[int]:
    """Indexes of `items` (calls or rows: anything with span_id, parent_span_id, response_id and scope_name)
    that are spans of a call another item describes more truly (`same_call`, `truest`)."""
    span_ids = {item.span_id for item in items}
    responses: dict[str, str] = {}
    for item in items:
        if item.parent_span_id in span_ids:
            break
        rid = item.response_id
        if rid and responses.setdefault(rid, item.scope_name) != item.scope_name:
            break
    else:
        return set()  # no nesting, no response named by two instrumentations (nearly always): nothing to choose
    summaries = [summarize(item) for item in items]
    dropped: set[int] = set()
    for group in twin_groups(summaries):
        keep = truest(summaries, group)
        dropped.update(i for i in group if i != keep)
    return dropped


def one_per_call(calls: list[Call]) -> list[Call]:
    """The calls, each call once: of two or more spans that describe one call (`same_call`), the truest."""
    dropped = dropped_twins(calls, summary_of_call)
    return [c for i, c in enumerate(calls) if i not in dropped] if dropped else calls
