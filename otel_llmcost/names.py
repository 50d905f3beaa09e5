"""Attribute names shared by the instrumentation and the collector.

GenAI facts use the constants of the installed `opentelemetry-semantic-conventions`; names the
conventions do not have are ours and start with `llmcost.`.
"""

from opentelemetry.semconv.attributes import error_attributes as _error
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv._incubating.attributes import openai_attributes as _openai
from opentelemetry.semconv.attributes import server_attributes as _server

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
