"""The hot path's reading of OTLP requests: export requests -> `normalize.Call`s, through a lighter schema.

The same wire format as ExportTraceServiceRequest, with only the fields read here and each attribute (an OTLP
KeyValue) kept as its encoded bytes. Attribute encodings repeat from span to span (the provider, the models, the
project, the feature, the same token counts and users again and again), so each distinct encoding is decoded
once (`_attribute`), with what `span_facts` needs to know of it, and the next span with the same bytes costs
one dictionary look-up instead of five protobuf accessors.

The reference is the plain reading through the official classes: `normalize.facts_of(normalize.attributes_of(
span.attributes))` of an `ExportTraceServiceRequest`'s spans, then `normalize.to_call`; `span_facts` and
`calls_in` give exactly what it gives (tests/test_otlp_lite.py feeds both the same requests).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from .. import names
from . import normalize
from .normalize import (PRIVATE, SCALAR_KINDS, AttributeEntry, Call, SetAside, any_value, as_text, attribute_entry,
                        facts_of_entries, is_llm_call, resource_json_of, to_call)

# The messages and fields read, named as in opentelemetry-proto, whose descriptors give their numbers and types.
_LITE_FIELDS = {
    "ExportTraceServiceRequest": ("resource_spans",),
    "ResourceSpans": ("resource", "scope_spans"),
    "Resource": ("attributes",),
    "ScopeSpans": ("scope", "spans"),
    "InstrumentationScope": ("name",),
    "Span": ("trace_id", "span_id", "parent_span_id", "name", "start_time_unix_nano", "end_time_unix_nano",
             "attributes", "status"),
    "Status": ("code",),
}


def _lite_request_class() -> Any:
    """ExportTraceServiceRequest's descriptors copied with only `_LITE_FIELDS`, attributes as bytes."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    package = "otel_llmcost.lite"
    lite = descriptor_pb2.FileDescriptorProto(name="otel_llmcost/otlp_lite.proto", package=package, syntax="proto3")
    descriptors, pending = {}, [ExportTraceServiceRequest.DESCRIPTOR]
    while pending:  # the request's message types, by following its message fields
        descriptor = pending.pop()
        descriptors[descriptor.name] = descriptor
        for name in _LITE_FIELDS[descriptor.name]:
            field = descriptor.fields_by_name[name]
            if field.message_type is not None and field.message_type.name in _LITE_FIELDS:
                pending.append(field.message_type)
    Field = descriptor_pb2.FieldDescriptorProto
    for name, descriptor in descriptors.items():
        message = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(message)
        fields = [f for f in message.field if f.name in _LITE_FIELDS[name]]
        out = lite.message_type.add(name=name)
        for field in fields:
            kept = out.field.add()
            kept.CopyFrom(field)
            if field.type == Field.TYPE_ENUM:  # (Status.code) an enum is a varint on the wire
                kept.type = Field.TYPE_INT32
                kept.ClearField("type_name")
            elif field.type == Field.TYPE_MESSAGE:
                short = field.type_name.rsplit(".", 1)[1]
                if short in _LITE_FIELDS:
                    kept.type_name = f".{package}.{short}"
                else:  # a KeyValue: kept as its bytes
                    kept.type = Field.TYPE_BYTES
                    kept.ClearField("type_name")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(lite)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.ExportTraceServiceRequest"))


LiteRequest = _lite_request_class()

# encoded KeyValue -> its `attribute_entry`; bounded, emptied when full.
_ATTRIBUTES: dict[bytes, AttributeEntry] = {}
_ATTRIBUTES_MAX = 32_768  # (a few MiB at most; one-off values, e.g. token counts, empty it now and then)
_ATTRIBUTE_MAX_BYTES = 256  # longer ones (prompts, ...) are rarely repeated: decoded each time, not kept
# An entry says whether the attribute is private, which the operator's kept attributes decide.
normalize.ON_KEPT_ATTRIBUTES_CHANGE.append(_ATTRIBUTES.clear)


def _attribute(encoded: bytes) -> AttributeEntry:
    kv = KeyValue.FromString(encoded)
    value = kv.value
    kind = value.WhichOneof("value")
    entry = attribute_entry(kv.key, getattr(value, kind) if kind in SCALAR_KINDS else any_value(value))
    if len(encoded) <= _ATTRIBUTE_MAX_BYTES and kind in SCALAR_KINDS:  # (lists and maps are not shared)
        if len(_ATTRIBUTES) >= _ATTRIBUTES_MAX:
            _ATTRIBUTES.clear()
        _ATTRIBUTES[encoded] = entry
    return entry


def span_facts(encoded_attributes: Any) -> tuple[dict[str, Any], bool, bool, dict[str, str]]:
    """`facts_of(attributes_of(...))` of a span's attributes as encoded KeyValues (`LiteRequest`).

    The common case in one pass without `facts_of_entries`' bookkeeping: every fact at its most specific
    spelling (rank 0: ours and the current conventions), each once. Anything else (another spelling, or a
    fact's key repeated without a value) is read again by `facts_of_entries`, which settles every case."""
    known = _ATTRIBUTES.get
    facts: dict[str, Any] = {}
    rest: dict[str, str] = {}
    names_usage = names_cache_hit = False
    for encoded in encoded_attributes:
        key, fact, rank, value, text, flag, _ = known(encoded) or _attribute(encoded)
        if text is not None:
            rest[key] = text
        if fact is None:
            continue
        if rank or (value is None and fact in facts):
            return facts_of_entries([known(e) or _attribute(e) for e in encoded_attributes])
        if flag:
            if flag == 1:
                names_usage = True
            else:
                names_cache_hit = True
        if value is not None:
            facts[fact] = value  # (this key again: its last value, as a dict keeps it)
    return facts, names_usage, names_cache_hit, rest



def lite_request(request: ExportTraceServiceRequest | bytes) -> Any:
    """The request (a message or its protobuf bytes) read through `LiteRequest`."""
    if not isinstance(request, (bytes, bytearray, memoryview)):
        request = request.SerializeToString()
    return LiteRequest.FromString(request)


def calls_in(request: ExportTraceServiceRequest | bytes, set_aside: list | None = None) -> Iterator[Call]:
    """Every LLM call an OTLP export request (a message, or its protobuf bytes) describes; other spans are
    skipped. With `set_aside` (a list), a span that cannot be read into a storable call is appended to it as
    (trace_id, span_id, reason, the span as text) instead of raising."""
    for resource_spans in lite_request(request).resource_spans:
        resource: dict[str, Any] = {}
        for encoded in resource_spans.resource.attributes:
            entry = _ATTRIBUTES.get(encoded) or _attribute(encoded)
            if entry[6] is not PRIVATE:
                resource[entry[0]] = entry[6]  # (the last of a repeated key wins)
        service_name = as_text(resource.get("service.name")) or "unknown_service"
        resource_text = {key: as_text(value) for key, value in resource.items()}
        resource_json = resource_json_of(resource_text)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                facts, names_usage, names_cache_hit, rest = span_facts(span.attributes)
                if not is_llm_call(facts, names_usage, names_cache_hit) or (
                        not names_usage and rest.get(names.USAGE_ELSEWHERE) == "true"):
                    continue  # (a span whose usage is recorded on another span: a background response's polls)
                try:
                    call = to_call(span, facts, names_usage, rest, service_name, scope_name, resource_text,
                                   resource_json)
                except Exception as exc:
                    if set_aside is None:
                        raise
                    set_aside.append((span.trace_id.hex(), span.span_id.hex(), _reason(exc),
                                      span_text(span, facts, rest, service_name, scope_name)))
                    continue
                yield call


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SetAside) else f"{type(exc).__name__}: {exc}"


def span_text(span: Any, facts: dict[str, Any], rest: dict[str, str], service_name: str, scope_name: str) -> str:
    """A span (`LiteRequest`) as JSON text for the dead letters: what was read of it, private attributes left
    out as they are from rows."""
    document = {"trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                "parent_span_id": span.parent_span_id.hex(), "name": span.name,
                "start_time_unix_nano": span.start_time_unix_nano, "end_time_unix_nano": span.end_time_unix_nano,
                "service_name": service_name, "scope_name": scope_name,
                "facts": {key: as_text(value) for key, value in facts.items()}, "attributes": rest}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def request_text(request: bytes, limit: int = 1 << 20) -> str:
    """An OTLP request (protobuf bytes) as JSON text for the dead letters, its spans as `span_text` (so without
    private attributes), at most `limit` characters; what can be read of it if it is not readable at all."""
    try:
        spans = []
        for resource_spans in lite_request(request).resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    facts, _, _, rest = span_facts(span.attributes)
                    spans.append(span_text(span, facts, rest, "", scope_spans.scope.name))
        text = "[" + ",".join(spans) + "]"
    except Exception as exc:
        return f"unreadable request of {len(request)} bytes: {type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "...(cut)"

