"""Canned provider responses for the in-process transport: realistic bodies with full usage (cache and
reasoning tokens included), and SSE streams of a chosen number of content chunks. Standard library only:
this module is imported inside the peers' venvs too."""

from __future__ import annotations

import json

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"


def openai_chat() -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench0001", "object": "chat.completion", "created": 1763000000, "model": OPENAI_MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "Paris is the capital of France.", "refusal": None}}],
        "usage": {"prompt_tokens": 5100, "completion_tokens": 200, "total_tokens": 5300,
                  "prompt_tokens_details": {"cached_tokens": 5000, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_bench",
    }).encode()


def openai_stream(chunks: int) -> bytes:
    out = []
    base = {"id": "chatcmpl-bench0002", "object": "chat.completion.chunk", "created": 1763000000,
            "model": OPENAI_MODEL, "service_tier": "default", "system_fingerprint": "fp_bench"}
    out.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}], "usage": None})
    for i in range(chunks):
        out.append({**base, "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}],
                    "usage": None})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
    out.append({**base, "choices": [], "usage": {
        "prompt_tokens": 5100, "completion_tokens": chunks, "total_tokens": 5100 + chunks,
        "prompt_tokens_details": {"cached_tokens": 5000}, "completion_tokens_details": {"reasoning_tokens": 0}}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in out) + "data: [DONE]\n\n"
    return body.encode()


def anthropic_message() -> bytes:
    return json.dumps({
        "id": "msg_bench0001", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "Paris is the capital of France."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 4000, "cache_creation_input_tokens": 1000,
                  "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 200, "service_tier": "standard"},
    }).encode()


def anthropic_stream(chunks: int) -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_bench0002", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 100, "cache_read_input_tokens": 4000, "cache_creation_input_tokens": 1000,
                      "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
                      "output_tokens": 1, "service_tier": "standard"}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    for i in range(chunks):
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": f" tok{i}"}}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": chunks}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
