"""otel-llmcost: what every LLM API call cost, from OpenTelemetry spans.

The application's API: `attributes(project=..., feature=..., user_id=...)` (attribution for the LLM calls made
inside, as baggage), `record_cache_hit(...)` and the `cache_hit(...)` decorator (a call the application's own
cache saved). The SDK instrumentors are in `otel_llmcost.instrumentation`.
"""

__version__ = "0.1.0"

from .instrumentation.api import attributes, cache_hit, record_cache_hit  # noqa: E402

__all__ = ["__version__", "attributes", "cache_hit", "record_cache_hit"]
