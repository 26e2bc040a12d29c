"""Wire protocols by the name a route gives them. Adding a protocol is one module in this
package and one line below; the middleware, the meter and the budgets never learn its name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .anthropic import AnthropicProtocol
from .base import RequestFacts, ResponseReader, ResponseReading, WireProtocol
from .gemini import GeminiProtocol
from .openai import OpenAIProtocol

PROTOCOLS: Mapping[str, WireProtocol] = MappingProxyType({
    "openai": OpenAIProtocol(),
    "anthropic": AnthropicProtocol(),
    "gemini": GeminiProtocol(),
})

__all__ = ["PROTOCOLS", "RequestFacts", "ResponseReader", "ResponseReading", "WireProtocol"]
