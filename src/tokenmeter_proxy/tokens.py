"""Token counts for requests whose usage the upstream did not report, with OpenAI's own tokenizers.

Input counts follow OpenAI's cookbook "How to count tokens with tiktoken"
(openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb): messages as its
`num_tokens_from_messages`, tools as its `num_tokens_for_tools`. The cookbook's examples, with the
`prompt_tokens` the API reported for them, are tests in tests/test_tokens.py. They remain
estimates: OpenAI may change its framing, and nested tool parameters, audio and files are not
counted. Every counter takes a parsed JSON body as the client sent it and never raises on a
malformed one; it counts what it can recognise.

tiktoken downloads its vocabularies on first use, and a proxy may have no internet:
`vocabularies.prime_offline_cache` at startup makes `tiktoken.get_encoding` work offline.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import tiktoken
from cachetools import LRUCache

O200K_BASE: Final = "o200k_base"
CL100K_BASE: Final = "cl100k_base"

# Checked first because "gpt-4o", "gpt-4.1" and "gpt-4.5" also start with "gpt-4".
_O200K_PREFIXES: Final = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
_CL100K_PREFIXES: Final = (
    "gpt-4",
    "gpt-3.5",
    "gpt-35",  # Azure's spelling
    "text-embedding-3-",
    "text-embedding-ada-002",
    "davinci-002",
    "babbage-002",
)

_PER_MESSAGE: Final = 3  # <|start|>{role/name}\n{content}<|end|>\n, as the cookbook counts it
_PER_NAME: Final = 1
_REPLY_PRIMING: Final = 3  # every reply is primed with <|start|>assistant<|message|>
# gpt-3.5-turbo-0301 framed messages differently: 4 tokens each, and a name replaced the role.
_LEGACY_MODELS: Final = frozenset({"gpt-3.5-turbo-0301", "gpt-35-turbo-0301"})
_LEGACY_PER_MESSAGE: Final = 4
_LEGACY_PER_NAME: Final = -1
# The price of a low-detail image. High-detail images cost more (85 plus 170 per 512-px tile), but
# the proxy does not fetch images, so without their dimensions they are undercounted.
_IMAGE_TOKENS: Final = 85
_IMAGE_PART_TYPES: Final = frozenset({"image_url", "input_image"})


@dataclass(frozen=True, slots=True)
class _ToolCosts:
    """The cookbook's `num_tokens_for_tools` constants, fitted to the API's counts."""

    func_init: int
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12


_O200K_TOOL_COSTS: Final = _ToolCosts(func_init=7)
_CL100K_TOOL_COSTS: Final = _ToolCosts(func_init=10)


def warm_up() -> None:
    """Load both vocabularies now (about a second), rather than while counting the first request."""
    for name in (O200K_BASE, CL100K_BASE):
        tiktoken.get_encoding(name)


def encoding_name_for(model: str | None) -> str:
    """The tiktoken encoding of a model: cl100k_base for the GPT-4 and GPT-3.5 families and the
    embedding models, o200k_base for everything newer and, as the best guess, for unknown models.

    Provider prefixes ("openai/gpt-4o") and fine-tune prefixes ("ft:gpt-4o-mini:org::id") are
    ignored. Only these two encodings ship offline, so no model maps to any other.
    """
    return _encoding_name(model if isinstance(model, str) else None)


@functools.lru_cache(maxsize=1024)  # a client names few models: looked up once each
def _encoding_name(model: str | None) -> str:
    name = _base_model(model)
    if name.startswith(_O200K_PREFIXES):
        return O200K_BASE
    if name.startswith(_CL100K_PREFIXES):
        return CL100K_BASE
    return O200K_BASE


def count_text(model: str | None, text: str) -> int:
    """Tokens in plain text, such as the completion a stream delivered.

    Special-token markers like "<|endoftext|>" count as ordinary text, as the API treats them.
    """
    return _n(_encoding(model), text)


def count_input(endpoint: str, model: str | None, body: object, raw: bytes) -> int:
    """The `prompt_tokens` a request should cost, for any metered endpoint.

    `body` is the parsed JSON body, or None when it could not be parsed; a body that is not a
    JSON object is counted as the text of `raw`.
    """
    if isinstance(body, dict):
        match endpoint:
            case "chat/completions":
                return count_chat_input(model, body)
            case "completions":
                return count_completions_input(model, body)
            case "embeddings":
                return count_embeddings_input(model, body)
            case "responses":
                return count_responses_input(model, body)
    return count_text(model, raw.decode("utf-8", errors="replace"))


def count_chat_input(model: str | None, body: object) -> int:
    """`prompt_tokens` of a /v1/chat/completions body: the cookbook's message framing plus tools.

    Each message costs 3 tokens, plus its string values (role, content, name, tool_call_id...),
    plus 1 for a name. Content parts count their text, images 85 each (see `_IMAGE_TOKENS`);
    tool calls count their function name and arguments. The reply is primed with 3 more.
    """
    if not isinstance(body, dict):
        return 0
    encoding_name, per_message, per_name = _chat_framing(model if isinstance(model, str) else None)
    encoding = tiktoken.get_encoding(encoding_name)
    total = _REPLY_PRIMING
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            total += per_message + _message_tokens(encoding, message, per_name)
    tools, legacy = body.get("tools"), body.get("functions")
    if not tools and not legacy:  # most requests
        return total
    return total + _tools_tokens(encoding, encoding_name, [*_functions(tools), *_functions(legacy)])


@functools.lru_cache(maxsize=1024)
def _chat_framing(model: str | None) -> tuple[str, int, int]:
    """A model's encoding, and what each message and each name add to it."""
    if _base_model(model) in _LEGACY_MODELS:
        return encoding_name_for(model), _LEGACY_PER_MESSAGE, _LEGACY_PER_NAME
    return encoding_name_for(model), _PER_MESSAGE, _PER_NAME


def count_completions_input(model: str | None, body: object) -> int:
    """`prompt_tokens` of a /v1/completions body: `prompt` (text, texts, or token ids) and `suffix`."""
    if not isinstance(body, dict):
        return 0
    encoding = _encoding(model)
    return _prompt_tokens(encoding, body.get("prompt")) + _prompt_tokens(encoding, body.get("suffix"))


def count_embeddings_input(model: str | None, body: object) -> int:
    """`prompt_tokens` of a /v1/embeddings body: `input` as text, texts, or token ids."""
    if not isinstance(body, dict):
        return 0
    return _prompt_tokens(_encoding(model), body.get("input"))


def count_responses_input(model: str | None, body: object) -> int:
    """`input_tokens` of a /v1/responses body: `instructions`, `input` and function `tools`.

    OpenAI documents no token framing for the Responses API, so this is an estimate by analogy
    with chat: `instructions` count as a system message, a string `input` as a user message, and
    every input item (message, function call, function call output...) costs 3 tokens plus its
    text, with 3 more priming the reply. Tools, in the Responses' flat shape, are counted as in
    chat. Earlier turns referenced by `previous_response_id` are not in the body and not counted.
    """
    if not isinstance(body, dict):
        return 0
    encoding_name = encoding_name_for(model)
    encoding = tiktoken.get_encoding(encoding_name)
    total = _REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += _item_tokens(encoding, {"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        total += _item_tokens(encoding, {"role": "user", "content": items})
    elif isinstance(items, list):
        total += sum(_item_tokens(encoding, item) for item in items)
    return total + _tools_tokens(encoding, encoding_name, list(_functions(body.get("tools"))))


def _encoding(model: str | None) -> tiktoken.Encoding:
    # tiktoken keeps every encoding it has built, so this is a dictionary lookup after the first.
    return tiktoken.get_encoding(encoding_name_for(model))


def _n(encoding: tiktoken.Encoding, text: str) -> int:
    if not text:
        return 0
    if len(text) <= _SHORT_CHARS:
        return _short_count(encoding, text)
    if len(text) > _CACHED_UP_TO_CHARS:
        return _count(encoding, text)
    key = (encoding.name, text)
    with _counted_lock:
        found = _counted.get(key)
    if found is None:
        found = _count(encoding, text), len(text) + _ENTRY_CHARS
        with _counted_lock:
            _counted[key] = found
    return found[0]


def _count(encoding: tiktoken.Encoding, text: str) -> int:
    # encode_ordinary never raises on "<|endoftext|>" and skips the special-token scan encode does
    return len(encoding.encode_ordinary(text))


# A chat app sends the whole conversation again on every turn (the system prompt, the roles, the
# history), so most of a request's text was counted before: the counts of the texts seen lately
# are kept, and a turn costs counting what is new in it. This also saves handing the GIL to
# another thread and back, which tiktoken does for every text it encodes. Short texts (roles,
# names, most messages) in a cache by count (4,096 of at most 2,048 characters: 8M characters at
# most), longer ones in one by size (8M characters' worth), locked: counting runs on the event
# loop and in threads.
_SHORT_CHARS: Final = 2048
_short_count = functools.lru_cache(maxsize=4096)(_count)
_CACHED_UP_TO_CHARS: Final = 1_000_000
_ENTRY_CHARS: Final = 64  # what an entry costs besides its text, roughly, in characters
_counted: LRUCache[tuple[str, str], tuple[int, int]] = LRUCache(  # (encoding, text) -> (tokens, size)
    maxsize=8_000_000, getsizeof=lambda found: found[1])
_counted_lock = threading.Lock()


def _base_model(model: str | None) -> str:
    if not isinstance(model, str):
        return ""
    return model.rpartition("/")[2].lower().removeprefix("ft:")


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    """The JSON objects in `value` when it is a list; nothing otherwise."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _message_tokens(encoding: tiktoken.Encoding, message: dict[str, Any], per_name: int) -> int:
    total = 0
    for key, value in message.items():
        if isinstance(value, str):
            total += _n(encoding, value)
            if key == "name":
                total += per_name
        elif key == "content":
            total += _parts_tokens(encoding, value)
        elif key == "tool_calls":
            total += sum(_call_tokens(encoding, call.get("function")) for call in _dicts(value))
        elif key == "function_call":
            total += _call_tokens(encoding, value)
    return total


def _parts_tokens(encoding: tiktoken.Encoding, parts: object) -> int:
    """Content parts: text, input_text, output_text and refusal parts by their text, images 85."""
    total = 0
    for part in _dicts(parts):
        text = part.get("text")
        if not isinstance(text, str):
            text = part.get("refusal")
        kind = part.get("type")
        if isinstance(text, str):
            total += _n(encoding, text)
        elif isinstance(kind, str) and kind in _IMAGE_PART_TYPES:
            total += _IMAGE_TOKENS
    return total


def _call_tokens(encoding: tiktoken.Encoding, call: object) -> int:
    """A function call's name and arguments (and a custom tool call's input)."""
    if not isinstance(call, dict):
        return 0
    return sum(_n(encoding, _text(call.get(key))) for key in ("name", "arguments", "input"))


def _item_tokens(encoding: tiktoken.Encoding, item: object) -> int:
    """One Responses input item, framed like a chat message."""
    if isinstance(item, str):
        return _PER_MESSAGE + _n(encoding, item)
    if not isinstance(item, dict):
        return 0
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        content = item.get("content")
        text = _n(encoding, content) if isinstance(content, str) else _parts_tokens(encoding, content)
        return _PER_MESSAGE + _n(encoding, _text(item.get("role"))) + text
    if kind in ("function_call", "custom_tool_call"):
        return _PER_MESSAGE + _call_tokens(encoding, item)
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        text = _n(encoding, output) if isinstance(output, str) else _parts_tokens(encoding, output)
        return _PER_MESSAGE + text
    # Reasoning, built-in tool calls, item references: their tokens are not in the body.
    return _PER_MESSAGE


def _prompt_tokens(encoding: tiktoken.Encoding, prompt: object) -> int:
    """A prompt or embeddings input: str | list[str] | list[int] | list[list[int]]."""
    if isinstance(prompt, str):
        return _n(encoding, prompt)
    if not isinstance(prompt, list):
        return 0
    total = 0
    for item in prompt:
        if isinstance(item, str):
            total += _n(encoding, item)
        elif isinstance(item, int):
            total += 1  # already a token id
        elif isinstance(item, list):
            total += sum(1 for token in item if isinstance(token, int))
    return total


def _functions(tools: object) -> Iterator[dict[str, Any]]:
    """Function definitions from chat `tools` ({"type": "function", "function": {...}}), legacy
    `functions` ({...}) or Responses `tools` ({"type": "function", "name": ...}); other tool
    types (web search, file search...) are skipped."""
    for tool in _dicts(tools):
        if tool.get("type", "function") != "function":
            continue
        nested = tool.get("function")
        yield nested if isinstance(nested, dict) else tool


def _tools_tokens(encoding: tiktoken.Encoding, encoding_name: str, functions: list[dict[str, Any]]) -> int:
    if not functions:
        return 0
    costs = _O200K_TOOL_COSTS if encoding_name == O200K_BASE else _CL100K_TOOL_COSTS
    return sum(_function_tokens(encoding, function, costs) for function in functions) + costs.func_end


def _function_tokens(encoding: tiktoken.Encoding, function: dict[str, Any], costs: _ToolCosts) -> int:
    name = _text(function.get("name"))
    description = _text(function.get("description")).removesuffix(".")
    total = costs.func_init + _n(encoding, f"{name}:{description}")
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict) or not properties:
        return total
    total += costs.prop_init
    for key, spec in properties.items():
        total += costs.prop_key + _property_tokens(encoding, key, spec, costs)
    return total


def _property_tokens(encoding: tiktoken.Encoding, key: str, spec: object, costs: _ToolCosts) -> int:
    """One top-level parameter: "key:type:description", plus its enum values. Nested object
    properties are not counted, as in the cookbook."""
    if not isinstance(spec, dict):
        spec = {}
    total = 0
    enum = spec.get("enum")
    if isinstance(enum, list):
        total += costs.enum_init
        total += sum(costs.enum_item + _n(encoding, _enum_text(item)) for item in enum)
    description = _text(spec.get("description")).removesuffix(".")
    return total + _n(encoding, f"{key}:{_type_text(spec.get('type'))}:{description}")


def _enum_text(item: object) -> str:
    if isinstance(item, str):
        return item
    if item is None or isinstance(item, bool | int | float):
        return json.dumps(item)  # as the JSON schema spells it: true, null, 3
    return ""


def _type_text(kind: object) -> str:
    if isinstance(kind, list):
        # A union such as ["string", "null"], which the model sees as "string | null".
        return " | ".join(item for item in kind if isinstance(item, str))
    return _text(kind)
