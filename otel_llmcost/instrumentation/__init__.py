"""Auto-instrumentation of LLM SDKs. Each SDK has one `BaseInstrumentor`, found by
`opentelemetry-instrument` through the `opentelemetry_instrumentor` entry points."""
