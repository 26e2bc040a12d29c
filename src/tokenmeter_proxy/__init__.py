"""tokenmeter-proxy: an OpenAI-compatible reverse proxy that meters, prices and records every LLM call."""

__version__ = "0.1.0"
