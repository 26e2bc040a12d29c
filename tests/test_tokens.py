"""Token counting, with OpenAI's cookbook examples as the reference.

The chat and tools examples, and the counts they must give, come from the openai-cookbook notebook
examples/How_to_count_tokens_with_tiktoken.ipynb, where each count is printed next to the
`prompt_tokens` the OpenAI API reported for the same request.
"""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken

from tokenmeter_proxy.tokens import (
    CL100K_BASE,
    O200K_BASE,
    count_chat_input,
    count_completions_input,
    count_embeddings_input,
    count_input,
    count_responses_input,
    count_text,
    encoding_name_for,
    warm_up,
)


def gpt_4o(text: str) -> int:
    return count_text("gpt-4o", text)


# The cookbook's example conversation (section 6, "Counting tokens for chat completions API calls").
COOKBOOK_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

# The cookbook's tools example (section 7, "Counting tokens for chat completions with tool calls").
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOLS_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "prompt_tokens"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        # From an earlier revision of the notebook, when this snapshot still ran.
        ("gpt-3.5-turbo-0301", 127),
    ],
)
def test_cookbook_messages_count_what_the_api_reported(model: str, prompt_tokens: int) -> None:
    assert count_chat_input(model, {"model": model, "messages": COOKBOOK_MESSAGES}) == prompt_tokens


@pytest.mark.parametrize(
    ("model", "prompt_tokens"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tools_count_what_the_api_reported(model: str, prompt_tokens: int) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOLS_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert count_chat_input(model, body) == prompt_tokens


def test_legacy_functions_count_like_tools() -> None:
    tools = {"messages": COOKBOOK_TOOLS_MESSAGES, "tools": COOKBOOK_TOOLS}
    functions = {"messages": COOKBOOK_TOOLS_MESSAGES, "functions": [COOKBOOK_TOOLS[0]["function"]]}
    assert count_chat_input("gpt-4o", functions) == count_chat_input("gpt-4o", tools) == 101


def test_a_trailing_period_in_descriptions_is_not_counted() -> None:
    def weather_tool(description: str) -> dict[str, Any]:
        return {"tools": [{"type": "function", "function": {"name": "weather", "description": description}}]}

    assert count_chat_input("gpt-4o", weather_tool("Get the weather.")) == count_chat_input(
        "gpt-4o", weather_tool("Get the weather")
    )


def test_a_name_costs_its_tokens_and_one_more() -> None:
    anonymous = {"messages": [{"role": "user", "content": "Hello"}]}
    named = {"messages": [{"role": "user", "name": "alice", "content": "Hello"}]}
    assert count_chat_input("gpt-4o", named) == count_chat_input("gpt-4o", anonymous) + gpt_4o("alice") + 1


def test_framing_is_three_per_message_and_three_for_the_reply() -> None:
    body = {"messages": [{"role": "user", "content": "Hello"}]}
    assert count_chat_input("gpt-4o", body) == 3 + gpt_4o("user") + gpt_4o("Hello") + 3


def test_content_parts_count_their_text_and_85_per_image() -> None:
    as_text = {"messages": [{"role": "user", "content": "What is in this image?"}]}
    as_parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
    }
    assert count_chat_input("gpt-4o", as_parts) == count_chat_input("gpt-4o", as_text) + 85


def test_tool_calls_count_their_function_name_and_arguments() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    without = {"messages": [{"role": "assistant", "content": None}]}
    with_call = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    call_tokens = gpt_4o("get_current_weather") + gpt_4o('{"location": "Paris"}')
    assert count_chat_input("gpt-4o", with_call) == count_chat_input("gpt-4o", without) + call_tokens


def test_completions_prompt_may_be_text_texts_or_token_ids() -> None:
    hello = count_text("gpt-3.5-turbo-instruct", "Hello world")
    assert count_completions_input("gpt-3.5-turbo-instruct", {"prompt": "Hello world"}) == hello
    assert count_completions_input("gpt-3.5-turbo-instruct", {"prompt": ["Hello world"] * 3}) == 3 * hello
    assert count_completions_input("gpt-3.5-turbo-instruct", {"prompt": [9906, 1917]}) == 2
    assert count_completions_input("gpt-3.5-turbo-instruct", {"prompt": [[9906, 1917], [9906]]}) == 3


def test_embeddings_input_may_be_text_texts_or_token_ids() -> None:
    model = "text-embedding-3-small"
    assert count_embeddings_input(model, {"input": "The food was delicious"}) == 4
    assert count_embeddings_input(model, {"input": ["The food", "was delicious"]}) == 4
    assert count_embeddings_input(model, {"input": [791, 3691, 574, 18406]}) == 4
    assert count_embeddings_input(model, {"input": [[791, 3691], [574, 18406]]}) == 4


def test_responses_are_framed_like_chat() -> None:
    system, question = COOKBOOK_TOOLS_MESSAGES[0]["content"], COOKBOOK_TOOLS_MESSAGES[1]["content"]
    flat_tools = [{"type": "function", **COOKBOOK_TOOLS[0]["function"]}, {"type": "web_search"}]
    response = {"instructions": system, "input": question, "tools": flat_tools}
    as_items = {
        "instructions": system,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": question}]}],
    }
    assert count_responses_input("gpt-4o", response) == 101
    assert count_responses_input("gpt-4o", as_items) == count_chat_input(
        "gpt-4o", {"messages": COOKBOOK_TOOLS_MESSAGES}
    )


def test_responses_function_call_items_count_name_arguments_and_output() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "x"}'}
    output = {"type": "function_call_output", "call_id": "c1", "output": "42"}
    call_tokens = 3 + gpt_4o("lookup") + gpt_4o('{"q": "x"}')
    output_tokens = 3 + gpt_4o("42")
    reply_priming = 3
    assert (
        count_responses_input("gpt-4o", {"input": [call, output]})
        == call_tokens + output_tokens + reply_priming
    )


def test_count_input_dispatches_on_the_endpoint() -> None:
    body = {"model": "gpt-4o", "input": "Hello"}
    assert count_input("embeddings", "gpt-4o", body, b"") == gpt_4o("Hello")
    assert count_input("responses", "gpt-4o", body, b"") == 3 + gpt_4o("user") + gpt_4o("Hello") + 3


def test_an_unparseable_body_is_counted_as_text() -> None:
    raw = b'{"model": "gpt-4o", "messages": [ this is not JSON'
    assert count_input("chat/completions", "gpt-4o", None, raw) == gpt_4o(raw.decode())
    assert count_input("chat/completions", "gpt-4o", ["a", "list"], b'["a", "list"]') > 0
    assert count_input("completions", None, None, b"\xff\xfe not utf-8") > 0


def test_special_token_markers_are_ordinary_text() -> None:
    assert count_text("gpt-4o", "<|endoftext|>") > 1
    assert count_completions_input("gpt-4", {"prompt": "<|endoftext|><|fim_prefix|>"}) > 2


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-2024-08-06", O200K_BASE),
        ("gpt-4o-mini", O200K_BASE),
        ("chatgpt-4o-latest", O200K_BASE),
        ("gpt-4.1-nano", O200K_BASE),
        ("gpt-4.5-preview", O200K_BASE),
        ("gpt-5", O200K_BASE),
        ("o1", O200K_BASE),
        ("o3-mini", O200K_BASE),
        ("o4-mini", O200K_BASE),
        ("gpt-4-0613", CL100K_BASE),
        ("gpt-4-turbo", CL100K_BASE),
        ("gpt-4", CL100K_BASE),
        ("gpt-3.5-turbo", CL100K_BASE),
        ("gpt-35-turbo", CL100K_BASE),
        ("text-embedding-3-large", CL100K_BASE),
        ("text-embedding-ada-002", CL100K_BASE),
        ("ft:gpt-3.5-turbo-0125:acme::abc123", CL100K_BASE),
        ("openai/gpt-4", CL100K_BASE),
        ("llama-3", O200K_BASE),
        ("gpt-oss-20b", O200K_BASE),  # tiktoken says o200k_harmony, which does not ship offline
        ("text-davinci-003", O200K_BASE),  # p50k_base does not ship offline either
        (None, O200K_BASE),
    ],
)
def test_encoding_per_model_family(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_warm_up_loads_the_vocabularies_before_the_first_request() -> None:
    warm_up()
    assert count_text("gpt-4", "hello world") == count_text("gpt-4o", "hello world") == 2


HOSTILE_BODIES: list[object] = [
    {},
    {"messages": "hello"},
    {"messages": [None, 1, "text", [], {"role": 5, "content": {"a": 1}, "name": None}]},
    {"messages": [{"content": [None, 3, {"type": ["image_url"]}, {"type": "text", "text": 5}]}]},
    {"messages": [{"tool_calls": [{"function": "f"}, None, {"function": {"name": 1, "arguments": {}}}]}]},
    {"messages": [{"function_call": [1, 2]}], "functions": "f"},
    {"tools": [None, "x", {"type": {"a": 1}}, {"type": "function", "function": []}]},
    {"tools": [{"function": {"name": None, "description": 3, "parameters": {"properties": []}}}]},
    {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {
                        "properties": {
                            "a": None,
                            "b": {"enum": [1, None, True, {"x": 1}, [2]], "type": ["string", None]},
                            "c": {"enum": "not a list", "type": {"x": 1}, "description": ["d"]},
                        }
                    },
                },
            }
        ]
    },
    {"prompt": [[1, "a", None], {"x": 1}, None, 2.5, True], "suffix": 3, "input": {"a": [1]}},
    {
        "input": [
            None,
            3,
            "text",
            {"type": ["message"]},
            {"type": "function_call_output", "output": [1, None]},
        ]
    },
    {"input": [{"role": {"x": 1}, "content": 7}, {"type": "function_call", "name": None}], "instructions": 5},
    [],
    "a string",
    None,
]


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "embeddings", "responses"])
@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_malformed_bodies_never_raise(endpoint: Any, body: object) -> None:
    count = count_input(endpoint, "gpt-4o", body, b"{}")
    assert isinstance(count, int)
    assert count >= 0



def test_a_conversation_sent_again_is_counted_only_where_it_is_new(monkeypatch: pytest.MonkeyPatch) -> None:
    encoding = tiktoken.get_encoding(O200K_BASE)
    encoded: list[str] = []
    real = encoding.encode_ordinary

    def counting(text: str) -> list[int]:
        encoded.append(text)
        return real(text)

    monkeypatch.setattr(encoding, "encode_ordinary", counting)
    history = "Summarise the figures of the last quarter for the board, please. " * 40  # 2,640 characters
    first = gpt_4o(history)
    assert first == len(real(history))
    assert gpt_4o(history) == first and encoded == [history]  # the next turn: remembered
    role = "a role only this test names"
    assert gpt_4o(role) == gpt_4o(role) == len(real(role)) and encoded.count(role) == 1  # short ones too
    huge = "word " * 250_001  # over the cache's limit for one text: counted each time, never an error
    assert gpt_4o(huge) == gpt_4o(huge) and encoded.count(huge) == 2
