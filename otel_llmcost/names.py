"""Attribute names shared by the instrumentation and the collector.

GenAI facts use the constants of the installed `opentelemetry-semantic-conventions`; names the
conventions do not have are ours and start with `llmcost.`.
"""

from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.attributes import openai_attributes as _openai
from opentelemetry.semconv.attributes import server_attributes as _server

# The instrumentation scope (tracer, meter and logger name) of our spans: the collector recognizes them by it.
SCOPE = "otel_llmcost"

OPERATION = _gen_ai.GEN_AI_OPERATION_NAME
PROVIDER = _gen_ai.GEN_AI_PROVIDER_NAME
REQUEST_MODEL = _gen_ai.GEN_AI_REQUEST_MODEL
REQUEST_STREAM = getattr(_gen_ai, "GEN_AI_REQUEST_STREAM", "gen_ai.request.stream")
RESPONSE_MODEL = _gen_ai.GEN_AI_RESPONSE_MODEL
RESPONSE_ID = _gen_ai.GEN_AI_RESPONSE_ID
INPUT_TOKENS = _gen_ai.GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS = _gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
CACHE_READ_TOKENS = getattr(
    _gen_ai, "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS", "gen_ai.usage.cache_read.input_tokens"
)
CACHE_WRITE_TOKENS = getattr(
    _gen_ai, "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS", "gen_ai.usage.cache_creation.input_tokens"
)
REASONING_TOKENS = getattr(
    _gen_ai, "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS", "gen_ai.usage.reasoning.output_tokens"
)
ERROR_TYPE = _error.ERROR_TYPE
SERVER_ADDRESS = _server.SERVER_ADDRESS

# The conventions have no service-tier attribute for every provider; ours carries what the API returned.
SERVICE_TIER = "llmcost.response.service_tier"
# The tier a request asked for: the conventions' name for OpenAI, ours for the others.
OPENAI_REQUEST_SERVICE_TIER = _openai.OPENAI_REQUEST_SERVICE_TIER
REQUEST_SERVICE_TIER = "llmcost.request.service_tier"
# Cache writes by TTL (Anthropic reports 5-minute and 1-hour writes, priced differently).
CACHE_WRITE_1H_TOKENS = "llmcost.usage.cache_creation_1h.input_tokens"
# A stream that ended without the provider's usage report.
USAGE_MISSING = "llmcost.usage_missing"
# The token counts are the instrumentation's estimate (from the text seen), not the provider's report.
USAGE_ESTIMATED = "llmcost.usage.estimated"
# Why the usage is missing or estimated, in words (added to the row's price_note).
USAGE_NOTE = "llmcost.usage.note"
# This span's usage is recorded on another span (a background response's create and polls, a result already
# recorded): the collector makes no row of it.
USAGE_ELSEWHERE = "llmcost.usage.elsewhere"
# Batch results: the batch they came from and each request's own id within it.
BATCH_ID = "llmcost.batch.id"
BATCH_CUSTOM_ID = "llmcost.batch.custom_id"

# Attribution: travels as baggage and is copied onto each LLM span under the same names.
PROJECT = "llmcost.project"
FEATURE = "llmcost.feature"
USER_ID = "user.id"
ATTRIBUTION_KEYS = (PROJECT, FEATURE, USER_ID)

# Application-level cache hits: a span that stands for a call the app did not make.
CACHE_HIT_KIND = "llmcost.cache_hit.kind"  # exact | semantic | any word the app uses
CACHE_HIT_INPUT_TOKENS = "llmcost.cache_hit.input_tokens"  # what the avoided call would have used
CACHE_HIT_OUTPUT_TOKENS = "llmcost.cache_hit.output_tokens"

# Fingerprint of the stable prompt prefix (system prompt and tool definitions): a hash and a length, never the text.
PREFIX_HASH = "llmcost.prompt.prefix_hash"
PREFIX_LENGTH = "llmcost.prompt.prefix_length"

# Server-side tool use billed per request (Anthropic's web search).
WEB_SEARCH_REQUESTS = "llmcost.usage.web_search_requests"

# The provider another instrumentation named for a call the collector stores as self-hosted (by its server).
REPORTED_PROVIDER = "llmcost.provider.reported"

# Usage billed apart from text tokens, by modality (each inside the input or output count it belongs to, as
# the providers report them), per-call tool fees, the speed tier, and compaction iterations.
INPUT_AUDIO_TOKENS = "llmcost.usage.input_audio_tokens"
CACHE_READ_AUDIO_TOKENS = "llmcost.usage.cache_read_audio_tokens"  # within the cache reads and the input audio
OUTPUT_AUDIO_TOKENS = "llmcost.usage.output_audio_tokens"
INPUT_IMAGE_TOKENS = "llmcost.usage.input_image_tokens"
CACHE_READ_IMAGE_TOKENS = "llmcost.usage.cache_read_image_tokens"
OUTPUT_IMAGE_TOKENS = "llmcost.usage.output_image_tokens"
INPUT_VIDEO_TOKENS = "llmcost.usage.input_video_tokens"
OUTPUT_VIDEO_TOKENS = "llmcost.usage.output_video_tokens"
FILE_SEARCH_REQUESTS = "llmcost.usage.file_search_requests"  # OpenAI's file_search tool calls
SPEED = "llmcost.response.speed"  # Anthropic's `usage.speed`: standard | fast
# Anthropic compaction iterations (`usage.iterations` entries of type `compaction`): billed, but not in the
# top-level usage, so not in gen_ai.usage.*. Input counts all input, cache reads and writes included.
COMPACTION_INPUT_TOKENS = "llmcost.usage.compaction.input_tokens"
COMPACTION_OUTPUT_TOKENS = "llmcost.usage.compaction.output_tokens"
COMPACTION_CACHE_READ_TOKENS = "llmcost.usage.compaction.cache_read.input_tokens"
COMPACTION_CACHE_WRITE_TOKENS = "llmcost.usage.compaction.cache_creation.input_tokens"
