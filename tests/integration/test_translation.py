"""Clients in one schema, providers in another, inside a real Envoy: the official `anthropic` SDK
against an OpenAI-schema provider, the official `openai` SDK against an Anthropic-schema one, and
both against a Gemini-schema one, through the provider adapter's translators. JSON, streams, tool-call round trips (streamed
arguments included), errors raised as each SDK's own exception, and a fallback that changes
schema between attempts."""

import copy
import json
import time
import urllib.parse

import anthropic
import openai
import pytest
import requests

from harness.procs import wait_until
from harness.stack import DEMO_KEY, Stack, connection_manager, no_ejection, running

OPENAI_SECRET = "sk-openai-test-51d0aa"
ANTHROPIC_SECRET = "sk-ant-test-2e7c41"
GEMINI_SECRET = "AIza-gemini-test-93b1"
BEDROCK_SECRET = "ABSK-bedrock-test-7f20"
# The AWS key pair the Bedrock mock knows (AWS's documentation example).
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
KEYS = {"OPENAI_API_KEY": OPENAI_SECRET, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET, "GEMINI_API_KEY": GEMINI_SECRET,
        "AWS_BEARER_TOKEN_BEDROCK": BEDROCK_SECRET, **AWS_KEYS}
TEXT = "The capital of France is Paris."
GPT, CLAUDE, GEMINI = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
BEDROCK = "anthropic.claude-3-5-haiku-20241022-v1:0"
# What the mock signs a Gemini turn's first function call with.
SIGNATURE = "c2lnbmVkIGJ5IHRoZSBtb2Nr"

CONFIG = {
    "models": {
        "gpt-direct": {"targets": [{"provider": "openai", "model": GPT, "cluster": "provider_openai"}]},
        "claude-direct": {"targets": [{"provider": "anthropic", "model": CLAUDE, "cluster": "provider_anthropic"}]},
        "gemini-direct": {"targets": [{"provider": "gemini", "model": GEMINI, "cluster": "provider_gemini"}]},
        "vertex-direct": {"targets": [{"provider": "vertex", "model": "gemini-2.5-pro", "cluster": "provider_vertex"}]},
        "vertex-claude": {"targets": [{"provider": "vertex_claude", "model": "claude-sonnet-4-6@20260101",
                                       "cluster": "provider_vertex_claude"}]},
        "bedrock-direct": {"targets": [{"provider": "bedrock", "model": BEDROCK, "cluster": "provider_bedrock"}]},
        # The same, signed with SigV4 by Envoy's signer (a cluster this module adds).
        "bedrock-signed": {"targets": [{"provider": "bedrock", "model": BEDROCK, "cluster": "provider_bedrock_signed"}]},
        # OpenAI first, Anthropic when it fails.
        "gpt-then-claude": {"targets": [{"provider": "openai", "model": GPT, "cluster": "chain_openai_anthropic"}],
                            "fallbacks": [{"provider": "anthropic", "model": CLAUDE}]},
        # OpenAI first, Gemini when it fails (a chain this module adds to the shipped config).
        "gpt-then-gemini": {"targets": [{"provider": "openai", "model": GPT, "cluster": "chain_openai_gemini"}],
                            "fallbacks": [{"provider": "gemini", "model": GEMINI}]},
    },
}
CALLS = [{"name": "weather", "arguments": {"city": "Paris"}}, {"name": "weather", "arguments": {"city": "Oslo"}}]
WEATHER = {"name": "weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def with_gemini_chain(config):
    """Adds `chain_openai_gemini`, built like the shipped OpenAI → Anthropic chain."""
    no_ejection(config)
    clusters = config["static_resources"]["clusters"]
    chain = copy.deepcopy(next(c for c in clusters if c["name"] == "chain_openai_anthropic"))
    chain["name"] = "chain_openai_gemini"
    chain["cluster_type"]["typed_config"]["clusters"] = ["provider_openai", "provider_gemini"]
    options = chain["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    adapter = options["http_filters"][0]["typed_config"]["config"]
    adapter["configuration"]["value"] = json.dumps({"providers": {
        "openai": {"api_key_env": "OPENAI_API_KEY", "authority": "api.openai.com"},
        "gemini": {"schema": "gemini", "api_key_env": "GEMINI_API_KEY",
                   "authority": "generativelanguage.googleapis.com"}}})
    clusters.append(chain)
    routes = connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    route = copy.deepcopy(routes[0])
    assert route["route"]["cluster"] == "chain_openai_anthropic"
    route["match"]["headers"][0]["string_match"]["exact"] = route["route"]["cluster"] = "chain_openai_gemini"
    routes.insert(0, route)


def with_signed_bedrock(config):
    """Adds `provider_bedrock_signed`: the Bedrock cluster with `aws_sigv4` and Envoy's SigV4
    signer after the adapter, as `plugins/provider-adapter/README.md` shows."""
    clusters = config["static_resources"]["clusters"]
    signed = copy.deepcopy(next(c for c in clusters if c["name"] == "provider_bedrock"))
    signed["name"] = signed["load_assignment"]["cluster_name"] = "provider_bedrock_signed"
    options = signed["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    adapter = options["http_filters"][0]["typed_config"]["config"]
    adapter["configuration"]["value"] = json.dumps({"providers": {"bedrock": {
        "schema": "bedrock", "aws_sigv4": True, "authority": "bedrock-runtime.us-east-1.amazonaws.com"}}})
    options["http_filters"].insert(1, {"name": "envoy.filters.http.aws_request_signing", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
        "service_name": "bedrock", "region": "us-east-1", "use_unsigned_payload": False}})
    clusters.append(signed)
    routes = connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    route = copy.deepcopy(next(r for r in routes if r["route"]["cluster"] == "provider_bedrock"))
    route["match"]["headers"][0]["string_match"]["exact"] = route["route"]["cluster"] = "provider_bedrock_signed"
    routes.insert(0, route)


VERTEX_TOKEN = "ya29.vertex-test-token"
VERTEX_PATH = "/v1/projects/p1/locations/europe-west4/publishers/google/models/{model}"


VERTEX_CLAUDE_PATH = "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/{model}"


def with_vertex(config):
    """Adds `provider_vertex` (the Gemini schema at Vertex AI's path) and `provider_vertex_claude`
    (the Anthropic schema at Vertex AI's Claude path), each with a bearer token."""
    clusters = config["static_resources"]["clusters"]
    routes = connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    for name, provider in [
        ("vertex", {"schema": "gemini", "api_key": VERTEX_TOKEN, "auth_header": "authorization",
                    "authority": "europe-west4-aiplatform.googleapis.com", "model_path": VERTEX_PATH}),
        ("vertex_claude", {"schema": "anthropic", "api_key": VERTEX_TOKEN, "auth_header": "authorization",
                           "authority": "us-east5-aiplatform.googleapis.com", "model_path": VERTEX_CLAUDE_PATH})]:
        vertex = copy.deepcopy(next(c for c in clusters if c["name"] == "provider_gemini"))
        vertex["name"] = vertex["load_assignment"]["cluster_name"] = f"provider_{name}"
        endpoint = vertex["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        endpoint["metadata"]["filter_metadata"]["sluice"]["provider"] = name
        options = vertex["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        options["http_filters"][0]["typed_config"]["config"]["configuration"]["value"] = json.dumps(
            {"providers": {name: provider}})
        clusters.append(vertex)
        route = copy.deepcopy(next(r for r in routes if r["route"]["cluster"] == "provider_gemini"))
        route["match"]["headers"][0]["string_match"]["exact"] = route["route"]["cluster"] = f"provider_{name}"
        routes.insert(0, route)


def patched(config):
    with_gemini_chain(config)
    with_signed_bedrock(config)
    with_vertex(config)


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=patched)


@pytest.fixture(scope="module")
def claude_sdk(gateway):
    return anthropic.Anthropic(base_url=gateway.url(""), api_key=DEMO_KEY, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def openai_sdk(gateway):
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=DEMO_KEY, max_retries=0, timeout=30)


def attempts(stack, since, query=False):
    """What the providers received since `since`, oldest first: (path, headers, body); the path
    with its query when `query`."""
    seen = requests.get(stack.mock("/mock/requests")).json()
    path = lambda r: r["path"] + (f"?{r['query']}" if query and r["query"] else "")  # noqa: E731
    return [(path(r), {k.lower(): v for k, v in r["headers"].items()}, json.loads(r["body"] or "{}"))
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


def claude_tool_uses(claude_sdk, model, stream, headers):
    """The `anthropic` SDK asks `model` for the scripted weather calls; their tool_use blocks."""
    ask = {"model": model, "max_tokens": 200, "tools": [WEATHER], "tool_choice": {"type": "any"},
           "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}],
           "extra_headers": {**tool_calls(), **headers}}
    if stream:
        with claude_sdk.messages.stream(**ask) as s:
            message = s.get_final_message()
    else:
        message = claude_sdk.messages.create(**ask)
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"})]
    return uses


def claude_send_results(claude_sdk, model, uses, results):
    """The `anthropic` SDK sends the calls back with their results (content blocks)."""
    answer = claude_sdk.messages.create(
        model=model, max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris and Oslo?"},
                  {"role": "assistant", "content": [u.model_dump(exclude_none=True) for u in uses]},
                  {"role": "user", "content": results}])
    assert answer.content[0].text == TEXT


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_sdk_tool_call_round_trip_through_an_openai_provider(gateway, claude_sdk, stream):
    since = time.time()
    uses = claude_tool_uses(claude_sdk, "gpt-direct", stream, {"x-mock-piece-chars": "3"})
    [(_, _, body)] = attempts(gateway, since)
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]
    assert body["tool_choice"] == "required"

    # The results go back; the provider sees OpenAI's tool messages for the calls it made.
    since = time.time()
    claude_send_results(claude_sdk, "gpt-direct", uses, [
                      {"type": "tool_result", "tool_use_id": uses[0].id, "content": "21C"},
                      {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "4C"}]},
                      {"type": "text", "text": "Which is warmer?"}])
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


def assert_gemini_attempt(path, headers, body, stream=False):
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    assert path == f"/v1beta/models/{GEMINI}:{method}"
    assert headers.get("x-goog-api-key") == GEMINI_SECRET
    assert headers.get("host") == "generativelanguage.googleapis.com"
    for header in ("authorization", "x-api-key", "anthropic-version"):
        assert header not in headers, header
    # The model and streaming are in the path; nothing of another schema is in the body.
    for member in ("model", "messages", "stream", "stream_options", "max_tokens", "sluice_models"):
        assert member not in body, member


def test_openai_sdk_gets_an_answer_from_a_gemini_provider(gateway, openai_sdk):
    since = time.time()
    completion = openai_sdk.chat.completions.create(
        model="gemini-direct", max_tokens=100, temperature=0.3, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-prompt-tokens": "12", "x-mock-completion-tokens": "9",
                       "x-mock-reasoning-tokens": "4", "x-mock-cached-tokens": "5",
                       # A client's Google key is not the gateway's to pass on.
                       "x-goog-api-key": "client-own-key"})
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (TEXT, "stop")
    assert completion.model == GEMINI
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 9, 21)
    assert usage.prompt_tokens_details.cached_tokens == 5
    assert usage.completion_tokens_details.reasoning_tokens == 4
    [(path, headers, body)] = attempts(gateway, since, query=True)
    assert_gemini_attempt(path, headers, body)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Capital of France?"}]}]
    assert body["generationConfig"] == {"maxOutputTokens": 100, "temperature": 0.3, "stopSequences": ["END"]}
    # The token counter, behind the adapter, counts the translated answer at Gemini's price.
    line = wait_until(lambda: next((l for l in reversed(gateway.access_log())
                                    if l.get("route_logical") == "gemini-direct" and l.get("completion_tokens") == "9"),
                                   None), "counted log line")
    assert (line["prompt_tokens"], line["upstream"]) == ("12", "provider_gemini")
    # 7 fresh and 5 cached prompt tokens, 9 answer tokens at gemini-2.5-flash's price per million.
    assert float(line["cost_usd"]) == pytest.approx((7 * 0.30 + 5 * 0.03 + 9 * 2.50) / 1e6, rel=1e-3)


def test_openai_sdk_streams_from_a_gemini_provider(gateway, openai_sdk):
    since = time.time()
    chunks = list(openai_sdk.chat.completions.create(
        model="gemini-direct", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-prompt-tokens": "11", "x-mock-completion-tokens": "4", "x-mock-chunk-bytes": "7"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and (usage[0].prompt_tokens, usage[0].completion_tokens) == (11, 4)
    [(path, headers, body)] = attempts(gateway, since, query=True)
    assert_gemini_attempt(path, headers, body, stream=True)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_sdk_tool_call_round_trip_through_a_gemini_provider(gateway, claude_sdk, stream):
    since = time.time()
    uses = claude_tool_uses(claude_sdk, "gemini-direct", stream, {"x-mock-chunk-bytes": "9"})
    assert len({u.id for u in uses}) == 2
    [(path, headers, body)] = attempts(gateway, since, query=True)
    assert_gemini_attempt(path, headers, body, stream=stream)
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "weather", "description": WEATHER["description"], "parametersJsonSchema": WEATHER["input_schema"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    # The results go back: Gemini gets its calls with the signature it gave, and named results.
    since = time.time()
    claude_send_results(claude_sdk, "gemini-direct", uses, [
                      {"type": "tool_result", "tool_use_id": uses[0].id, "content": "21C"},
                      {"type": "tool_result", "tool_use_id": uses[1].id, "content": "station offline",
                       "is_error": True},
                      {"type": "text", "text": "Which is warmer?"}])
    [(_, _, body)] = attempts(gateway, since)
    _, model_turn, results = body["contents"]
    assert model_turn == {"role": "model", "parts": [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]}
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "weather", "response": {"output": "21C"}}},
        {"functionResponse": {"name": "weather", "response": {"error": "station offline"}}},
        {"text": "Which is warmer?"}]}


@pytest.mark.parametrize("status,error,kind", [
    (400, openai.BadRequestError, "invalid_request_error"), (401, openai.AuthenticationError, "authentication_error"),
    (429, openai.RateLimitError, "rate_limit_error"), (503, openai.InternalServerError, "server_error")])
def test_gemini_provider_errors_reach_the_openai_sdk_as_its_own(gateway, openai_sdk, status, error, kind):
    with pytest.raises(error) as raised:
        openai_sdk.chat.completions.create(model="gemini-direct", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-mock-status": str(status)})
    assert raised.value.status_code == status
    assert raised.value.body["message"] == f"mock error {status}"
    assert raised.value.body["type"] == kind


def test_gemini_provider_errors_reach_the_anthropic_sdk_as_its_own(gateway, claude_sdk):
    with pytest.raises(anthropic.RateLimitError) as raised:
        claude_sdk.messages.create(model="gemini-direct", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-mock-status": "429"})
    assert raised.value.body["error"] == {"type": "rate_limit_error", "message": "mock error 429"}


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"model": "gemini-direct", "prompt": "hi"}),
    ("/v1/embeddings", {"model": "gemini-direct", "input": "hi"})])
def test_an_api_gemini_does_not_take_is_refused_and_never_sent(gateway, path, body):
    since = time.time()
    r = requests.post(gateway.url(path), headers={"authorization": f"Bearer {DEMO_KEY}"}, json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_api", r.text
    assert attempts(gateway, since) == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_chat_request_falls_back_from_openai_to_gemini_at_the_fallbacks_model_path(gateway, openai_sdk, stream):
    since = time.time()
    ask = {"model": "gpt-then-gemini", "messages": [{"role": "user", "content": "Capital of France?"}],
           "extra_headers": {"x-mock-fail-model": f"{GPT}=503"}}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in openai_sdk.chat.completions.create(**ask, stream=True)
                       if c.choices)
    else:
        text = openai_sdk.chat.completions.create(**ask).choices[0].message.content
    assert text == TEXT
    (first_path, first_headers, first), (second_path, second_headers, second) = attempts(gateway, since, query=True)
    assert_openai_attempt(first_path, first_headers, first)
    assert "x-goog-api-key" not in first_headers
    assert_gemini_attempt(second_path, second_headers, second, stream=stream)
    assert second["contents"] == [{"role": "user", "parts": [{"text": "Capital of France?"}]}]


# The Responses API, to providers that do not speak it.
WEATHER_FUNCTION = {"type": "function", "name": "weather", "description": WEATHER["description"],
                    "parameters": WEATHER["input_schema"]}


@pytest.mark.parametrize("model", ["claude-direct", "gemini-direct"])
def test_openai_sdk_responses_reach_a_provider_of_another_schema(gateway, openai_sdk, model):
    since = time.time()
    response = openai_sdk.responses.create(
        model=model, instructions="Be brief.", input="Capital of France?", max_output_tokens=64,
        extra_headers={"x-mock-prompt-tokens": "13", "x-mock-completion-tokens": "6"})
    assert (response.object, response.status, response.output_text) == ("response", "completed", TEXT)
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (13, 6, 19)
    [(path, headers, body)] = attempts(gateway, since, query=True)
    if model == "claude-direct":
        assert path == "/v1/messages" and headers.get("x-api-key") == ANTHROPIC_SECRET
        assert body == {"model": CLAUDE, "system": "Be brief.", "max_tokens": 64,
                        "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]}
    else:
        assert_gemini_attempt(path, headers, body)
        assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert body["generationConfig"] == {"maxOutputTokens": 64}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model,fallback", [("gpt-then-claude", "anthropic"), ("gpt-then-gemini", "gemini")])
def test_a_responses_request_falls_back_to_another_schema_in_its_own_shape(gateway, openai_sdk, model, fallback,
                                                                           stream):
    since = time.time()
    ask = {"model": model, "input": "Capital of France?", "extra_headers": {"x-mock-fail-model": f"{GPT}=503"}}
    if stream:
        with openai_sdk.responses.stream(**ask) as s:
            text = s.get_final_response().output_text
    else:
        text = openai_sdk.responses.create(**ask).output_text
    assert text == TEXT
    (first_path, first_headers, first), (second_path, second_headers, second) = attempts(gateway, since, query=True)
    # OpenAI gets the client's own Responses request; the fallback its translation.
    assert first_path == "/v1/responses" and first["model"] == GPT and first["input"] == "Capital of France?"
    assert first_headers.get("authorization") == f"Bearer {OPENAI_SECRET}"
    if fallback == "anthropic":
        assert second_path == "/v1/messages" and second["model"] == CLAUDE
        assert second_headers.get("x-api-key") == ANTHROPIC_SECRET and "authorization" not in second_headers
    else:
        assert_gemini_attempt(second_path, second_headers, second, stream=stream)


@pytest.mark.parametrize("model", ["claude-direct", "gemini-direct"])
def test_openai_sdk_responses_stream_through_the_sdks_own_accumulator(gateway, openai_sdk, model):
    with openai_sdk.responses.stream(model=model, input="Capital of France?",
                                     extra_headers={"x-mock-chunk-bytes": "11"}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert (final.status, final.output_text) == ("completed", TEXT)
    assert final.usage.input_tokens == 21 and final.usage.output_tokens == 7


@pytest.mark.parametrize("model,stream", [("claude-direct", False), ("claude-direct", True),
                                          ("gemini-direct", False), ("gemini-direct", True)])
def test_openai_sdk_responses_tool_call_round_trip(gateway, openai_sdk, model, stream):
    ask = {"model": model, "input": "Weather in Paris and Oslo?", "tools": [WEATHER_FUNCTION],
           "tool_choice": "required", "extra_headers": {**tool_calls(), "x-mock-piece-chars": "5"}}
    if stream:
        with openai_sdk.responses.stream(**ask) as s:
            response = s.get_final_response()
    else:
        response = openai_sdk.responses.create(**ask)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [(c["name"], c["arguments"]) for c in CALLS]
    assert len({c.call_id for c in calls}) == 2 and len({c.id for c in response.output}) == len(response.output)

    # The client appends the calls and their results to its input, as OpenAI's guide does.
    since = time.time()
    follow = openai_sdk.responses.create(
        model=model, tools=[WEATHER_FUNCTION],
        input=[{"role": "user", "content": "Weather in Paris and Oslo?"},
               *[c.model_dump(exclude_none=True) for c in calls],
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21C"},
               {"type": "function_call_output", "call_id": calls[1].call_id, "output": "4C"}])
    assert follow.output_text == TEXT
    [(_, _, body)] = attempts(gateway, since)
    if model == "claude-direct":
        _, assistant, results = body["messages"]
        assert [(b["type"], b["id"], b["input"]) for b in assistant["content"]] == \
            [("tool_use", c.call_id, json.loads(c.arguments)) for c in calls]
        assert results["content"] == [{"type": "tool_result", "tool_use_id": c.call_id, "content": out}
                                      for c, out in zip(calls, ["21C", "4C"])]
    else:
        _, model_turn, results = body["contents"]
        assert model_turn["parts"][0]["thoughtSignature"] == SIGNATURE
        assert [p["functionResponse"] for p in results["parts"]] == [
            {"name": "weather", "response": {"output": out}} for out in ["21C", "4C"]]


@pytest.mark.parametrize("extra,member", [
    ({"previous_response_id": "resp_abc"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "web_search"),
    ({"background": True}, "background")])
def test_responses_that_need_openai_are_refused_before_another_provider(gateway, openai_sdk, extra, member):
    since = time.time()
    with pytest.raises(openai.BadRequestError) as raised:
        openai_sdk.responses.create(model="claude-direct", input="hi", **extra)
    assert member in raised.value.body["message"]
    assert attempts(gateway, since) == []


def test_anthropic_errors_reach_a_responses_client_as_the_openai_sdks_own(gateway, openai_sdk):
    with pytest.raises(openai.RateLimitError) as raised:
        openai_sdk.responses.create(model="claude-direct", input="hi", extra_headers={"x-mock-status": "429"})
    assert raised.value.status_code == 429 and raised.value.body["message"] == "mock error 429"



# Bedrock's Converse API: the model percent-encoded in the path, streams in AWS event-stream frames.
def bedrock_attempt(stack, since):
    """The one request Bedrock received since `since`: its raw path, headers and body."""
    seen = [r for r in requests.get(stack.mock("/mock/requests")).json() if r["time"] >= since]
    assert len(seen) == 1, seen
    [r] = seen
    headers = {k.lower(): v for k, v in r["headers"].items()}
    assert headers.get("authorization") == f"Bearer {BEDROCK_SECRET}"
    assert headers.get("host") == "bedrock-runtime.us-east-1.amazonaws.com"
    for header in ("x-api-key", "x-goog-api-key", "anthropic-version"):
        assert header not in headers, header
    return r["raw_path"], json.loads(r["body"])


def test_openai_sdk_gets_an_answer_from_bedrock(gateway, openai_sdk):
    since = time.time()
    completion = openai_sdk.chat.completions.create(
        model="bedrock-direct", max_tokens=80, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-prompt-tokens": "14", "x-mock-cached-tokens": "4", "x-mock-completion-tokens": "6"})
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == (TEXT, "stop")
    # Converse answers name no model: the client is told the one the route sent.
    assert completion.model == BEDROCK
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 6)
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    path, body = bedrock_attempt(gateway, since)
    assert path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert body == {"messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
                    "system": [{"text": "Be brief."}], "inferenceConfig": {"maxTokens": 80, "stopSequences": ["END"]}}


@pytest.mark.parametrize("chunk", ["5", "64", "100000"])
def test_openai_sdk_streams_from_bedrock_event_stream_frames_split_anywhere(gateway, openai_sdk, chunk):
    since = time.time()
    chunks = list(openai_sdk.chat.completions.create(
        model="bedrock-direct", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-chunk-bytes": chunk, "x-mock-prompt-tokens": "11", "x-mock-completion-tokens": "4"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(11, 4)]
    path, _ = bedrock_attempt(gateway, since)
    assert path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_sdk_tool_call_round_trip_through_bedrock(gateway, claude_sdk, stream):
    since = time.time()
    uses = claude_tool_uses(claude_sdk, "bedrock-direct", stream, {"x-mock-chunk-bytes": "13"})
    _, body = bedrock_attempt(gateway, since)
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "weather", "description": WEATHER["description"],
                                                          "inputSchema": {"json": WEATHER["input_schema"]}}}],
                                  "toolChoice": {"any": {}}}
    since = time.time()
    claude_send_results(claude_sdk, "bedrock-direct", uses, [
                      {"type": "tool_result", "tool_use_id": uses[0].id, "content": "21C"},
                      {"type": "tool_result", "tool_use_id": uses[1].id, "content": "offline", "is_error": True}])
    _, body = bedrock_attempt(gateway, since)
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": u.id, "name": u.name, "input": u.input}} for u in uses]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": uses[0].id, "content": [{"text": "21C"}]}},
        {"toolResult": {"toolUseId": uses[1].id, "content": [{"text": "offline"}], "status": "error"}}]


@pytest.mark.parametrize("at", [3, 60, 200])
def test_a_corrupt_bedrock_stream_ends_in_an_error_never_in_garbage(gateway, openai_sdk, at):
    """One bit flipped anywhere in the event stream (prelude, headers, payload): the checksums
    catch it; the client gets the text before the damage and then an error."""
    text = ""
    with pytest.raises(openai.APIError) as raised:
        for chunk in openai_sdk.chat.completions.create(
                model="bedrock-direct", stream=True, messages=[{"role": "user", "content": "Capital?"}],
                extra_headers={"x-mock-corrupt-at": str(at), "x-mock-piece-chars": "4"}):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert TEXT.startswith(text)
    assert "corrupt" in str(raised.value)


@pytest.mark.parametrize("status,error", [(400, openai.BadRequestError), (429, openai.RateLimitError),
                                          (503, openai.InternalServerError)])
def test_bedrock_errors_reach_the_openai_sdk_as_its_own(gateway, openai_sdk, status, error):
    with pytest.raises(error) as raised:
        openai_sdk.chat.completions.create(model="bedrock-direct", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-mock-status": str(status)})
    assert raised.value.status_code == status and raised.value.body["message"] == f"mock error {status}"


@pytest.mark.parametrize("extra,why", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]},
     "inline"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}, "JSON")])
def test_what_converse_cannot_carry_is_refused_and_never_sent(gateway, openai_sdk, extra, why):
    since = time.time()
    with pytest.raises(openai.BadRequestError) as raised:
        openai_sdk.chat.completions.create(model="bedrock-direct", **extra)
    assert why in raised.value.body["message"]
    assert attempts(gateway, since) == []


def test_openai_sdk_responses_reach_bedrock(gateway, openai_sdk):
    with openai_sdk.responses.stream(model="bedrock-direct", input="Capital of France?") as stream:
        final = stream.get_final_response()
    assert (final.status, final.output_text, final.model) == ("completed", TEXT, BEDROCK)



@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_bedrock_requests_signed_with_sigv4_pass_botocores_check(gateway, claude_sdk, stream):
    since = time.time()
    ask = {"model": "bedrock-signed", "max_tokens": 50, "messages": [{"role": "user", "content": "Capital of France?"}],
           # A client's own AWS headers are not the signer's to use.
           "extra_headers": {"x-amz-security-token": "client-token", "x-amz-date": "20000101T000000Z"}}
    if stream:
        with claude_sdk.messages.stream(**ask) as s:
            text = "".join(s.text_stream)
    else:
        text = claude_sdk.messages.create(**ask).content[0].text
    assert text == TEXT
    [record] = [r for r in requests.get(gateway.mock("/mock/requests")).json() if r["time"] >= since]
    assert record["sigv4"] == "valid", record.get("sigv4")
    headers = {k.lower(): v for k, v in record["headers"].items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "x-amz-security-token" not in headers and headers["x-amz-date"] != "20000101T000000Z"
    for header in ("x-api-key", "x-goog-api-key", "anthropic-version"):
        assert header not in headers, header


def test_a_wrong_aws_secret_is_rejected_by_the_provider():
    keys = {**KEYS, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with Stack(configs={"sluice.model_rewriter": CONFIG}, provider_keys=keys, patch=patched) as stack:
        client = anthropic.Anthropic(base_url=stack.url(""), api_key=DEMO_KEY, max_retries=0, timeout=30)
        with pytest.raises(anthropic.PermissionDeniedError) as raised:
            client.messages.create(model="bedrock-signed", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert "signature" in raised.value.body["error"]["message"]
        [record] = requests.get(stack.mock("/mock/requests")).json()
        assert record["sigv4"].startswith("signature mismatch")



@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_vertex_ai_is_the_gemini_schema_at_its_own_path_with_a_bearer_token(gateway, claude_sdk, stream):
    since = time.time()
    ask = {"model": "vertex-direct", "max_tokens": 40, "messages": [{"role": "user", "content": "Capital of France?"}]}
    if stream:
        with claude_sdk.messages.stream(**ask) as s:
            text, final = "".join(s.text_stream), s.get_final_message()
    else:
        final = claude_sdk.messages.create(**ask)
        text = final.content[0].text
    assert (text, final.model) == (TEXT, "gemini-2.5-pro")
    [(path, headers, body)] = attempts(gateway, since, query=True)
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    assert path == VERTEX_PATH.format(model="gemini-2.5-pro") + ":" + method
    assert headers.get("authorization") == f"Bearer {VERTEX_TOKEN}"
    assert headers.get("host") == "europe-west4-aiplatform.googleapis.com"
    assert "x-goog-api-key" not in headers and "x-api-key" not in headers
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Capital of France?"}]}]


# Gemini clients: the official `google-genai` SDK, its key in `x-goog-api-key` (or `key=`), the
# model and streaming in the path, to providers of every schema.
from google import genai  # noqa: E402
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402

# Logical model -> (provider, upstream model).
SCHEMAS = {"gpt-direct": ("openai", GPT), "claude-direct": ("anthropic", CLAUDE),
           "gemini-direct": ("gemini", GEMINI), "bedrock-direct": ("bedrock", BEDROCK)}
WEATHER_DECLARATION = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
    name="weather", description=WEATHER["description"], parameters_json_schema=WEATHER["input_schema"])])


@pytest.fixture(scope="module")
def genai_sdk(gateway):
    # No retries unless asked for: each call is one attempt.
    return genai.Client(api_key=DEMO_KEY, http_options=genai_types.HttpOptions(base_url=gateway.url(""), timeout=30_000))


def genai_config(headers=None, **fields):
    return genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(headers=headers or {}), **fields)


def provider_attempt(stack, since, model, stream):
    """The one request the provider of logical `model` received since `since`, checked for its own
    path and credential and for the virtual key's absence; its body."""
    seen = [r for r in requests.get(stack.mock("/mock/requests")).json() if r["time"] >= since]
    assert len(seen) == 1, seen
    [r] = seen
    headers = {k.lower(): v for k, v in r["headers"].items()}
    assert DEMO_KEY not in json.dumps(headers) and DEMO_KEY not in r["raw_path"], r
    provider, upstream = SCHEMAS[model]
    body = json.loads(r["body"])
    if provider == "openai":
        assert_openai_attempt(r["path"], headers, body, model=upstream)
        assert body.get("stream", False) is stream
    elif provider == "anthropic":
        assert r["path"] == "/v1/messages" and headers.get("x-api-key") == ANTHROPIC_SECRET
        assert body["model"] == upstream and body.get("stream", False) is stream
    elif provider == "gemini":
        assert_gemini_attempt(r["path"] + (f"?{r['query']}" if r["query"] else ""), headers, body, stream=stream)
    else:
        assert headers.get("authorization") == f"Bearer {BEDROCK_SECRET}" and "x-goog-api-key" not in headers
        method = "converse-stream" if stream else "converse"
        assert r["raw_path"] == f"/model/{urllib.parse.quote(upstream, safe='')}/{method}"
    return body


def counted(gateway, model, prompt, completion):
    """The access log line of a request to logical `model` the token counter counted so."""
    return wait_until(lambda: next((l for l in reversed(gateway.access_log())
                                    if l.get("route_logical") == model and l.get("prompt_tokens") == str(prompt)
                                    and l.get("completion_tokens") == str(completion)), None), "counted log line")


@pytest.mark.parametrize("model", list(SCHEMAS))
def test_genai_sdk_gets_an_answer_from_every_provider_schema(gateway, genai_sdk, model):
    since = time.time()
    response = genai_sdk.models.generate_content(
        model=model, contents="Capital of France?",
        config=genai_config({"x-mock-prompt-tokens": "12", "x-mock-completion-tokens": "9"},
                            system_instruction="Be brief.", max_output_tokens=100, temperature=0.3))
    assert response.text == TEXT
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (12, 9)
    body = provider_attempt(gateway, since, model, stream=False)
    # The system prompt and the token limit reach each provider in its own schema.
    assert "Be brief." in json.dumps(body)
    limit = {"openai": ("max_completion_tokens",), "anthropic": ("max_tokens",),
             "gemini": ("generationConfig", "maxOutputTokens"), "bedrock": ("inferenceConfig", "maxTokens")}
    value = body
    for member in limit[SCHEMAS[model][0]]:
        value = value[member]
    assert value == 100
    # The token counter reads the Gemini-schema answer the client got.
    line = counted(gateway, model, 12, 9)
    assert line["model"] == model and float(line["cost_usd"]) > 0


@pytest.mark.parametrize("model", list(SCHEMAS))
def test_genai_sdk_streams_from_every_provider_schema(gateway, genai_sdk, model):
    since = time.time()
    chunks = list(genai_sdk.models.generate_content_stream(
        model=model, contents="Capital of France?",
        config=genai_config({"x-mock-prompt-tokens": "11", "x-mock-completion-tokens": "4", "x-mock-chunk-bytes": "7"})))
    assert "".join(c.text or "" for c in chunks) == TEXT
    assert [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason] == \
        [genai_types.FinishReason.STOP]
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (11, 4)
    provider_attempt(gateway, since, model, stream=True)
    counted(gateway, model, 11, 4)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", list(SCHEMAS))
def test_genai_sdk_tool_call_round_trip_through_every_provider_schema(gateway, genai_sdk, model, stream):
    since = time.time()
    ask = {"model": model, "contents": "Weather in Paris and Oslo?",
           "config": genai_config({**tool_calls(), "x-mock-piece-chars": "3", "x-mock-chunk-bytes": "9"},
                                  tools=[WEATHER_DECLARATION],
                                  tool_config=genai_types.ToolConfig(
                                      function_calling_config=genai_types.FunctionCallingConfig(mode="ANY")))}
    if stream:
        parts = [p for c in genai_sdk.models.generate_content_stream(**ask) if c.candidates
                 for p in (c.candidates[0].content.parts if c.candidates[0].content else None) or []]
    else:
        parts = genai_sdk.models.generate_content(**ask).candidates[0].content.parts
    calls = [p for p in parts if p.function_call]
    assert [(p.function_call.name, p.function_call.args) for p in calls] == [(c["name"], c["arguments"]) for c in CALLS]
    body = provider_attempt(gateway, since, model, stream=stream)
    assert "weather" in json.dumps(body) and WEATHER["description"] in json.dumps(body)

    # The results go back by name, in order; the provider sees them as answers to its calls.
    since = time.time()
    answer = genai_sdk.models.generate_content(model=model, config=genai_config(tools=[WEATHER_DECLARATION]), contents=[
        genai_types.Content(role="user", parts=[genai_types.Part(text="Weather in Paris and Oslo?")]),
        genai_types.Content(role="model", parts=calls),
        genai_types.Content(role="user", parts=[
            genai_types.Part.from_function_response(name="weather", response={"output": "21C"}),
            genai_types.Part.from_function_response(name="weather", response={"output": "4C"}),
            genai_types.Part(text="Which is warmer?")])])
    assert answer.text == TEXT
    body = provider_attempt(gateway, since, model, stream=False)
    provider = SCHEMAS[model][0]
    if provider == "openai":
        assistant, first, second, question = body["messages"][1:]
        ids = [c["id"] for c in assistant["tool_calls"]]
        assert len(set(ids)) == 2
        assert [(m["tool_call_id"], m["role"]) for m in (first, second)] == [(i, "tool") for i in ids]
        assert "21C" in first["content"] and "4C" in second["content"]
        assert question == {"role": "user", "content": "Which is warmer?"}
    elif provider == "anthropic":
        uses = [b["id"] for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
        results = [b for b in body["messages"][2]["content"] if b["type"] == "tool_result"]
        assert len(set(uses)) == 2 and [r["tool_use_id"] for r in results] == uses
    elif provider == "gemini":
        _, model_turn, results = body["contents"]
        assert [p["functionCall"]["args"] for p in model_turn["parts"]] == [c["arguments"] for c in CALLS]
        assert [p["functionResponse"]["response"] for p in results["parts"][:2]] == [{"output": "21C"}, {"output": "4C"}]
    else:
        uses = [b["toolUse"]["toolUseId"] for b in body["messages"][1]["content"] if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in body["messages"][2]["content"] if "toolResult" in b]
        assert len(set(uses)) == 2 and results == uses


@pytest.mark.parametrize("model", list(SCHEMAS))
@pytest.mark.parametrize("status,error,name", [(400, genai_errors.ClientError, "INVALID_ARGUMENT"),
                                                (429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
                                                (503, genai_errors.ServerError, "UNAVAILABLE")])
def test_provider_errors_reach_the_genai_sdk_as_its_own(gateway, genai_sdk, model, status, error, name):
    with pytest.raises(error) as raised:
        genai_sdk.models.generate_content(model=model, contents="hi", config=genai_config({"x-mock-status": str(status)}))
    assert (raised.value.code, raised.value.status) == (status, name)
    assert raised.value.message == f"mock error {status}"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model,fallback", [("gpt-then-claude", "claude-direct"), ("gpt-then-gemini", "gemini-direct")])
def test_a_gemini_call_falls_back_to_another_schema_with_its_own_model_and_stream(gateway, genai_sdk, model,
                                                                                 fallback, stream):
    since = time.time()
    ask = {"model": model, "contents": "Capital of France?", "config": genai_config({"x-mock-fail-model": f"{GPT}=503"})}
    if stream:
        text = "".join(c.text or "" for c in genai_sdk.models.generate_content_stream(**ask))
    else:
        text = genai_sdk.models.generate_content(**ask).text
    assert text == TEXT
    (_, first_headers, first), (second_path, second_headers, second) = attempts(gateway, since, query=True)
    assert first["model"] == GPT and first.get("stream", False) is stream
    assert first_headers.get("authorization") == f"Bearer {OPENAI_SECRET}"
    if fallback == "gemini-direct":
        # Back in the client's own schema, at the fallback model's path, the gateway's members gone.
        assert_gemini_attempt(second_path, second_headers, second, stream=stream)
        assert second["contents"] == [{"role": "user", "parts": [{"text": "Capital of France?"}]}]
    else:
        assert second_path == "/v1/messages" and second["model"] == CLAUDE and second.get("stream", False) is stream


def test_a_key_in_the_query_is_taken_and_never_passed_on(gateway):
    since = time.time()
    body = {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}]}
    for model in ("gpt-direct", "gemini-direct"):
        r = requests.post(gateway.url(f"/v1beta/models/{model}:generateContent?key={DEMO_KEY}"), json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["candidates"][0]["content"]["parts"] == [{"text": TEXT}]
    seen = [r for r in requests.get(gateway.mock("/mock/requests")).json() if r["time"] >= since]
    assert [r["path"] for r in seen] == ["/v1/chat/completions", f"/v1beta/models/{GEMINI}:generateContent"]
    assert all(DEMO_KEY not in r["raw_path"] + json.dumps(r["headers"]) for r in seen)
    # A stream keeps its other parameters; a wrong key in the query is refused like any other.
    since = time.time()
    url = gateway.url(f"/v1beta/models/gemini-direct:streamGenerateContent?key={DEMO_KEY}&alt=sse")
    r = requests.post(url, json=body, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    [record] = [r for r in requests.get(gateway.mock("/mock/requests")).json() if r["time"] >= since]
    assert record["query"] == "alt=sse"
    r = requests.post(gateway.url("/v1beta/models/gemini-direct:generateContent?key=sk-wrong"), json=body, timeout=30)
    assert r.status_code == 401, r.text
    log = [l for l in gateway.access_log() if l.get("path", "").startswith("/v1beta/")]
    assert log and all(DEMO_KEY not in json.dumps(l) and "sk-wrong" not in json.dumps(l) for l in log)


@pytest.mark.parametrize("path,status,hint", [
    # Gemini's JSON-array stream is not read: refused with a hint, never sent.
    ("/v1beta/models/gemini-direct:streamGenerateContent", 404, "alt=sse"),
    ("/v1beta/models/gemini-direct:countTokens", 404, "Unknown request URL"),
    ("/v1beta/models/gemini-direct%3AgenerateContent", 404, "Unknown request URL"),
    ("/v1beta/models/:generateContent", 404, "Unknown request URL")])
def test_gemini_paths_the_gateway_does_not_read_are_refused_and_never_sent(gateway, path, status, hint):
    since = time.time()
    r = requests.post(gateway.url(path), headers={"x-goog-api-key": DEMO_KEY},
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=30)
    assert r.status_code == status and hint in r.json()["error"]["message"], r.text
    assert attempts(gateway, since) == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("model", ["gpt-direct", "gemini-direct"])
def test_a_gemini_prompts_pii_is_scrubbed_and_its_answer_restored(gateway, genai_sdk, model, stream):
    since = time.time()
    ask = {"model": model, "contents": "Write to jane.doe@example.com please.",
           "config": genai_config({"x-mock-text": urllib.parse.quote("Sent to <EMAIL_1> today."), "x-mock-piece-chars": "3"})}
    if stream:
        text = "".join(c.text or "" for c in genai_sdk.models.generate_content_stream(**ask))
    else:
        text = genai_sdk.models.generate_content(**ask).text
    assert text == "Sent to jane.doe@example.com today."
    body = provider_attempt(gateway, since, model, stream=stream)
    assert "jane.doe@example.com" not in json.dumps(body) and "<EMAIL_1>" in json.dumps(body)


def test_a_gemini_body_that_is_no_generate_request_is_refused(gateway, genai_sdk):
    since = time.time()
    for body in (b"[]", b'{"contents": 5}', b"{not json", b'{"contents": [], "contents": []}'):
        r = requests.post(gateway.url("/v1beta/models/gpt-direct:generateContent"), data=body,
                          headers={"x-goog-api-key": DEMO_KEY, "content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, (body, r.text)
    assert attempts(gateway, since) == []


# Anthropic's `count_tokens` (Claude Code calls it before each turn): Anthropic counts its own,
# the gateway counts for every other schema; never billed.
def test_count_tokens_reaches_an_anthropic_provider_with_its_model(gateway, claude_sdk):
    since = time.time()
    count = claude_sdk.messages.count_tokens(model="claude-direct", system="Be brief.",
                                             messages=[{"role": "user", "content": "Capital of France?"}],
                                             extra_headers={"x-mock-prompt-tokens": "33"})
    assert count.input_tokens == 33
    [(path, headers, body)] = attempts(gateway, since)
    assert path == "/v1/messages/count_tokens" and headers.get("x-api-key") == ANTHROPIC_SECRET
    assert body["model"] == CLAUDE and "max_tokens" not in body
    line = wait_until(lambda: next((l for l in reversed(gateway.access_log())
                                    if l.get("path") == "/v1/messages/count_tokens" and l.get("status") == 200), None),
                      "count_tokens log line")
    # Not metered: a count is billed nothing.
    assert float(line.get("cost_usd") or 0) == 0 and line.get("prompt_tokens") in (None, "", "-", "0"), line


@pytest.mark.parametrize("model", ["gpt-direct", "gemini-direct", "bedrock-direct"])
def test_count_tokens_is_answered_by_the_gateway_for_other_schemas(gateway, claude_sdk, model):
    since = time.time()
    ask = lambda text: claude_sdk.messages.count_tokens(  # noqa: E731
        model=model, messages=[{"role": "user", "content": text}]).input_tokens
    short, long = ask("Capital of France?"), ask("Capital of France? " * 50)
    assert 5 <= short < 30 and long > 10 * short, (short, long)
    assert attempts(gateway, since) == []


@pytest.mark.parametrize("extra,status", [({}, 200), ({"messages": "nope"}, 400), ({"model": "unknown-model"}, 404)])
def test_count_tokens_with_an_odd_body_gets_a_clear_answer(gateway, extra, status):
    since = time.time()
    body = {"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}], **extra}
    r = requests.post(gateway.url("/v1/messages/count_tokens"), json=body, timeout=30,
                      headers={"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"})
    assert r.status_code == status, r.text
    if status == 200:
        assert isinstance(r.json()["input_tokens"], int)
    assert attempts(gateway, since) == []


# Claude on Vertex AI: the Anthropic schema at `.../publishers/anthropic/models/<model>:rawPredict`,
# the model in the path, Vertex's `anthropic_version` in the body (the mock refuses anything else).
@pytest.mark.parametrize("client", ["anthropic", "openai", "genai"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_claude_on_vertex_ai_from_every_client_schema(gateway, claude_sdk, openai_sdk, genai_sdk, client, stream):
    since = time.time()
    question = [{"role": "user", "content": "Capital of France?"}]
    if client == "anthropic":
        ask = {"model": "vertex-claude", "max_tokens": 40, "messages": question}
        if stream:
            with claude_sdk.messages.stream(**ask) as s:
                text, model = "".join(s.text_stream), s.get_final_message().model
        else:
            message = claude_sdk.messages.create(**ask)
            text, model = message.content[0].text, message.model
    elif client == "openai":
        if stream:
            chunks = list(openai_sdk.chat.completions.create(model="vertex-claude", messages=question, stream=True))
            text, model = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[0].model
        else:
            completion = openai_sdk.chat.completions.create(model="vertex-claude", messages=question)
            text, model = completion.choices[0].message.content, completion.model
    else:
        if stream:
            chunks = list(genai_sdk.models.generate_content_stream(model="vertex-claude", contents="Capital of France?"))
            text, model = "".join(c.text or "" for c in chunks), chunks[0].model_version
        else:
            response = genai_sdk.models.generate_content(model="vertex-claude", contents="Capital of France?")
            text, model = response.text, response.model_version
    assert (text, model) == (TEXT, "claude-sonnet-4-6@20260101")
    [(path, headers, body)] = attempts(gateway, since)
    method = "streamRawPredict" if stream else "rawPredict"
    assert path == VERTEX_CLAUDE_PATH.format(model="claude-sonnet-4-6@20260101") + ":" + method
    assert headers.get("authorization") == f"Bearer {VERTEX_TOKEN}"
    assert headers.get("host") == "us-east5-aiplatform.googleapis.com"
    for header in ("x-api-key", "anthropic-version", "x-goog-api-key"):
        assert header not in headers, header
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
    assert body["messages"] == [{"role": "user", "content": "Capital of France?"}] or \
        body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]
    assert body.get("stream", False) is stream
