"""Clients in one schema, providers in another, inside a real Envoy: the official `anthropic` SDK
against an OpenAI-schema provider and the official `openai` SDK against an Anthropic-schema one,
through the provider adapter's translators. JSON, streams, tool-call round trips (streamed
arguments included), errors raised as each SDK's own exception, and a fallback that changes
schema between attempts."""

import json
import time
import urllib.parse

import anthropic
import openai
import pytest
import requests

from harness.stack import DEMO_KEY, running

OPENAI_SECRET = "sk-openai-test-51d0aa"
ANTHROPIC_SECRET = "sk-ant-test-2e7c41"
KEYS = {"OPENAI_API_KEY": OPENAI_SECRET, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}
TEXT = "The capital of France is Paris."
GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"

CONFIG = {
    "models": {
        "gpt-direct": {"targets": [{"provider": "openai", "model": GPT, "cluster": "provider_openai"}]},
        "claude-direct": {"targets": [{"provider": "anthropic", "model": CLAUDE, "cluster": "provider_anthropic"}]},
        # OpenAI first, Anthropic when it fails.
        "gpt-then-claude": {"targets": [{"provider": "openai", "model": GPT, "cluster": "chain_openai_anthropic"}],
                            "fallbacks": [{"provider": "anthropic", "model": CLAUDE}]},
    },
}
CALLS = [{"name": "weather", "arguments": {"city": "Paris"}}, {"name": "weather", "arguments": {"city": "Oslo"}}]
WEATHER = {"name": "weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def no_ejection(config):
    for cluster in config["static_resources"]["clusters"]:
        if "outlier_detection" in cluster:
            cluster["outlier_detection"] = {"consecutive_5xx": 1000, "consecutive_gateway_failure": 1000}


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=no_ejection)


@pytest.fixture(scope="module")
def claude_sdk(gateway):
    return anthropic.Anthropic(base_url=gateway.url(""), api_key=DEMO_KEY, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def openai_sdk(gateway):
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=DEMO_KEY, max_retries=0, timeout=30)


def attempts(stack, since):
    """What the providers received since `since`, oldest first: (path, headers, body)."""
    seen = requests.get(stack.mock("/mock/requests")).json()
    return [(r["path"], {k.lower(): v for k, v in r["headers"].items()}, json.loads(r["body"] or "{}"))
            for r in seen if r["time"] >= since]


def tool_calls(calls=CALLS):
    return {"x-mock-tool-calls": urllib.parse.quote(json.dumps(calls)), "x-mock-text": ""}


def assert_openai_attempt(path, headers, body, model=GPT):
    assert path == "/v1/chat/completions"
    assert headers.get("authorization") == f"Bearer {OPENAI_SECRET}"
    for header in ("x-api-key", "anthropic-version", "anthropic-beta"):
        assert header not in headers, header
    assert body["model"] == model
    assert "max_tokens" not in body and "system" not in body


def test_anthropic_sdk_gets_an_answer_from_an_openai_provider(gateway, claude_sdk):
    since = time.time()
    message = claude_sdk.messages.create(
        model="gpt-direct", max_tokens=100, system="Be brief.", stop_sequences=["END"],
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 7)
    [(path, headers, body)] = attempts(gateway, since)
    assert_openai_attempt(path, headers, body)
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is the capital of France?"}]
    assert (body["max_completion_tokens"], body["stop"]) == (100, ["END"])


def test_anthropic_sdk_streams_from_an_openai_provider(gateway, claude_sdk):
    since = time.time()
    with claude_sdk.messages.stream(model="gpt-direct", max_tokens=50,
                                    messages=[{"role": "user", "content": "Capital of France?"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 7)
    [(path, headers, body)] = attempts(gateway, since)
    assert_openai_attempt(path, headers, body)
    # The provider is asked for usage, so the stream can be metered and the client told.
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_sdk_tool_call_round_trip_through_an_openai_provider(gateway, claude_sdk, stream):
    ask = {"model": "gpt-direct", "max_tokens": 200, "tools": [WEATHER], "tool_choice": {"type": "any"},
           "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}],
           "extra_headers": {**tool_calls(), "x-mock-piece-chars": "3"}}
    since = time.time()
    if stream:
        with claude_sdk.messages.stream(**ask) as s:
            message = s.get_final_message()
    else:
        message = claude_sdk.messages.create(**ask)
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"})]
    [(_, _, body)] = attempts(gateway, since)
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]
    assert body["tool_choice"] == "required"

    # The results go back; the provider sees OpenAI's tool messages for the calls it made.
    since = time.time()
    answer = claude_sdk.messages.create(
        model="gpt-direct", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris and Oslo?"},
                  {"role": "assistant", "content": [u.model_dump(exclude_none=True) for u in uses]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": uses[0].id, "content": "21C"},
                      {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "4C"}]},
                      {"type": "text", "text": "Which is warmer?"}]}])
    assert answer.content[0].text == TEXT
    [(_, _, body)] = attempts(gateway, since)
    assistant, first, second, question = body["messages"][1:]
    assert [c["id"] for c in assistant["tool_calls"]] == [u.id for u in uses]
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [c["arguments"] for c in CALLS]
    assert (first, second) == ({"role": "tool", "tool_call_id": uses[0].id, "content": "21C"},
                               {"role": "tool", "tool_call_id": uses[1].id, "content": "4C"})
    assert question == {"role": "user", "content": "Which is warmer?"}


@pytest.mark.parametrize("status,error", [(400, anthropic.BadRequestError), (401, anthropic.AuthenticationError),
                                          (429, anthropic.RateLimitError), (500, anthropic.InternalServerError)])
def test_openai_provider_errors_reach_the_anthropic_sdk_as_its_own(gateway, claude_sdk, status, error):
    with pytest.raises(error) as raised:
        claude_sdk.messages.create(model="gpt-direct", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-mock-status": str(status)})
    assert raised.value.status_code == status
    body = raised.value.body
    assert body["type"] == "error" and body["error"]["message"] == f"mock error {status}"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_sdk_tool_calls_through_an_anthropic_provider(gateway, openai_sdk, stream):
    ask = {"model": "claude-direct", "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}],
           "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}],
           "extra_headers": {**tool_calls(), "x-mock-piece-chars": "4"}}
    since = time.time()
    if stream:
        calls = {}
        finish = None
        for chunk in openai_sdk.chat.completions.create(**ask, stream=True):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": call.id, "name": None, "arguments": ""})
                    entry["name"] = entry["name"] or (call.function and call.function.name)
                    entry["arguments"] += (call.function and call.function.arguments) or ""
        got = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    else:
        completion = openai_sdk.chat.completions.create(**ask)
        finish = completion.choices[0].finish_reason
        got = [(c.function.name, json.loads(c.function.arguments)) for c in completion.choices[0].message.tool_calls]
    assert finish == "tool_calls"
    assert got == [(c["name"], c["arguments"]) for c in CALLS]
    [(path, headers, body)] = attempts(gateway, since)
    assert path == "/v1/messages" and headers.get("x-api-key") == ANTHROPIC_SECRET
    assert body["tools"][0]["input_schema"] == WEATHER["input_schema"]


def test_a_messages_request_falls_back_from_openai_to_anthropic_in_its_own_schema(gateway, claude_sdk):
    since = time.time()
    message = claude_sdk.messages.create(
        model="gpt-then-claude", max_tokens=64, messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-fail-model": f"{GPT}=503"})
    assert message.content[0].text == TEXT
    assert message.model == CLAUDE
    (first_path, first_headers, first), (second_path, second_headers, second) = attempts(gateway, since)
    assert_openai_attempt(first_path, first_headers, first)
    # The fallback gets the client's own Messages request, not the first attempt's translation.
    assert second_path == "/v1/messages"
    assert second_headers.get("x-api-key") == ANTHROPIC_SECRET and "authorization" not in second_headers
    assert second_headers.get("anthropic-version")
    assert second == {"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Capital of France?"}]}
