"""otel-llmcost: what every LLM API call cost, from OpenTelemetry spans."""

__version__ = "0.1.0"
