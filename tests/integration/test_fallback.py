"""Fallback across providers inside a real Envoy: an OpenAI-schema primary falls back to an
Anthropic-schema provider through the gateway's aggregate cluster `chain_openai_anthropic`, on
each failure kind, with each attempt's credentials, model and translation set by the provider
adapter; streams only before their first byte; a failing primary ejected after 3 failures."""

import json
import time

import pytest
import requests

from harness.procs import free_port, wait_until
from harness.client import post
from harness.stack import DEMO_KEY, Stack, no_ejection, running

CHAT = "/v1/chat/completions"
# Made-up provider keys, given to Envoy's environment: they must reach their own provider only,
# and never an answer or a log.
OPENAI_SECRET = "sk-openai-test-6f1c0e"
ANTHROPIC_SECRET = "sk-ant-test-93b7aa"
KEYS = {"OPENAI_API_KEY": OPENAI_SECRET, "ANTHROPIC_API_KEY": ANTHROPIC_SECRET}

PRIMARY, FALLBACK = "gpt-4o", "claude-sonnet-4-6"
CHAIN = {"targets": [{"provider": "openai", "model": PRIMARY, "cluster": "chain_openai_anthropic"}],
         "fallbacks": [{"provider": "anthropic", "model": FALLBACK}]}
CONFIG = {
    "models": {
        "chat-quality": CHAIN,
        "chat-direct": {"targets": [{"provider": "openai", "model": "gpt-4o-mini", "cluster": "provider_openai"}]},
        "claude-direct": {"targets": [{"provider": "anthropic", "model": FALLBACK, "cluster": "provider_anthropic"}]},
    },
    "unknown_models": "pass",
}


def short_idle_timeout(config):
    """A silent attempt is given up after 1 s instead of 30 s."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        if "retry_policy" in route["route"]:
            route["route"]["retry_policy"]["per_try_idle_timeout"] = "1s"


def patient(config):
    """The tests of one gateway fail the primary often: only the ejection test may eject it."""
    short_idle_timeout(config)
    no_ejection(config)


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=patient)


def ask(model="chat-quality", **extra):
    return {"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}], **extra}


def attempts(stack, since):
    """What the providers received since `since`, oldest first: (path, headers, body)."""
    seen = requests.get(stack.mock("/mock/requests")).json()
    return [(r["path"], {k.lower(): v for k, v in r["headers"].items()}, json.loads(r["body"] or "{}"))
            for r in seen if r["time"] >= since]


def logged(stack, before):
    """The access-log line of the one request sent since the log had `before` lines."""
    return wait_until(lambda: len(lines := stack.access_log()) > before and lines[-1], "its access-log line")


def history(line):
    """The log line's attempts: (provider, model, status), oldest first."""
    entries = [dict(field.split("=", 1) for field in entry.split()) for entry in line["attempt_history"].split("; ")]
    return [(e["provider"], e["model"], e["status"]) for e in entries]


def assert_openai_answer(response, model):
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == model
    assert answer["choices"][0]["message"]["content"] == "The capital of France is Paris."
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]


def assert_credentials(path, headers):
    """Each provider gets its own key, and only its own."""
    if path == "/v1/messages":
        assert headers.get("x-api-key") == ANTHROPIC_SECRET
        assert "authorization" not in headers
        assert headers.get("host") == "api.anthropic.com"
    else:
        assert headers.get("authorization") == f"Bearer {OPENAI_SECRET}"
        assert "x-api-key" not in headers and "anthropic-version" not in headers
        assert headers.get("host") == "api.openai.com"


def test_healthy_primary_answers(gateway):
    since = time.time()
    r = post(gateway, ask())
    assert r.status_code == 200, r.text
    assert r.headers["x-sluice-provider"] == "openai"
    assert_openai_answer(r, PRIMARY)
    [(path, headers, body)] = attempts(gateway, since)
    assert (path, body["model"]) == (CHAT, PRIMARY)
    assert "sluice_models" not in body
    assert "x-sluice-cluster" not in headers
    assert_credentials(path, headers)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_failing_primary_falls_back_to_anthropic(gateway, status):
    since = time.time()
    before = len(gateway.access_log())
    r = post(gateway, ask(), headers={"x-mock-fail-model": f"{PRIMARY}={status}"})
    assert r.status_code == 200, r.text
    # The client sees OpenAI's shape; only the header says who answered.
    assert r.headers["x-sluice-provider"] == "anthropic"
    assert_openai_answer(r, FALLBACK)
    sent = attempts(gateway, since)
    assert [(p, b["model"]) for p, _, b in sent] == [(CHAT, PRIMARY), ("/v1/messages", FALLBACK)]
    for path, headers, body in sent:
        assert "sluice_models" not in body
        assert_credentials(path, headers)
    assert sent[1][2]["messages"] == [{"role": "user", "content": [{"type": "text",
                                                                    "text": "What is the capital of France?"}]}]
    # The request's story: both attempts, in order, with the final provider.
    line = logged(gateway, before)
    assert history(line) == [("openai", PRIMARY, str(status)), ("anthropic", FALLBACK, "200")], line
    assert line["answered_by"] == "anthropic" and line["attempts"] == 2


def test_silent_primary_falls_back_after_the_idle_timeout(gateway):
    since = time.time()
    before = len(gateway.access_log())
    start = time.monotonic()
    r = post(gateway, ask(), headers={"x-mock-slow-model": f"{PRIMARY}=5000"})
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert r.headers["x-sluice-provider"] == "anthropic"
    assert_openai_answer(r, FALLBACK)
    assert elapsed < 4.5, elapsed  # the 5 s primary was not waited for
    assert [p for p, _, _ in attempts(gateway, since)][-1] == "/v1/messages"
    # The silent attempt is in the story as reset, after the idle timeout (1 s).
    line = logged(gateway, before)
    assert history(line) == [("openai", PRIMARY, "reset"), ("anthropic", FALLBACK, "200")], line
    assert int(line["attempt_history"].split("; ")[0].rsplit("ms=", 1)[1]) >= 900


def test_stream_falls_back_before_its_first_byte(gateway):
    import openai
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=DEMO_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat-quality", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-fail-model": f"{PRIMARY}=503", "x-mock-chunk-bytes": "9",
                       "x-mock-prompt-tokens": "12", "x-mock-completion-tokens": "5"})
    assert raw.headers["x-sluice-provider"] == "anthropic"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris."
    assert {c.model for c in chunks} == {FALLBACK}
    usage = [c.usage for c in chunks if c.usage]
    assert (usage[-1].prompt_tokens, usage[-1].completion_tokens) == (12, 5)


def test_stream_broken_after_its_first_byte_is_not_retried(gateway):
    since = time.time()
    with post(gateway, ask(stream=True), headers={"x-mock-reset-after": "60"}, stream=True) as r:
        assert r.status_code == 200
        assert r.headers["x-sluice-provider"] == "openai"
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in r.iter_content(None):
                received += piece
    assert received.startswith(b"data: ")
    # One attempt only: the client already had bytes from the primary.
    assert [p for p, _, _ in attempts(gateway, since)] == [CHAT]


def test_unreachable_primary_falls_back(tmp_path):
    closed = free_port()

    def primary_down(config):
        short_idle_timeout(config)
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"] == "provider_openai":
                address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                address["socket_address"]["port_value"] = closed

    with Stack(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=primary_down, workdir=tmp_path) as s:
        r = post(s, ask())
        assert r.status_code == 200, r.text
        assert r.headers["x-sluice-provider"] == "anthropic"
        assert_openai_answer(r, FALLBACK)
        # A model without a fallback, on the same dead provider: an error, in OpenAI's shape.
        direct = post(s, ask("chat-direct"))
        assert direct.status_code == 503
        assert s.vm_failures() == []


def test_every_provider_failing_gives_the_last_error_openai_style(gateway):
    r = post(gateway, ask(), headers={"x-mock-status": "503"})
    assert r.status_code == 503
    assert r.headers["x-sluice-provider"] == "anthropic"
    error = r.json()
    assert error["error"]["message"]


def test_primary_ejected_after_3_consecutive_failures(tmp_path):
    # The shipped outlier detection: 3 consecutive failures.
    with Stack(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, workdir=tmp_path) as s:
        failing = {"x-mock-fail-model": f"{PRIMARY}=503"}
        for _ in range(3):
            r = post(s, ask(), headers=failing)
            assert r.status_code == 200 and r.headers["x-sluice-provider"] == "anthropic"
        since = time.time()
        r = post(s, ask(), headers=failing)
        assert r.status_code == 200 and r.headers["x-sluice-provider"] == "anthropic"
        # The primary was skipped outright: the fallback got the only attempt.
        assert [p for p, _, _ in attempts(s, since)] == ["/v1/messages"]
        assert s.metric("envoy_cluster_outlier_detection_ejections_active", envoy_cluster_name="provider_openai") == 1


def test_clients_cannot_steer_the_route_or_the_chain(gateway):
    since = time.time()
    # A routing header from the client is dropped: unknown models pass to the path's default.
    r = post(gateway, ask("my-own-model", sluice_models={"openai": "gpt-expensive"}), headers={"x-sluice-cluster": "provider_anthropic", "x-sluice-api": "chat"})
    assert r.status_code == 200 and r.headers["x-sluice-provider"] == "openai"
    # A chain member from the client never picks a model.
    r = post(gateway, ask("chat-direct", sluice_models={"openai": "gpt-expensive"}))
    sent = attempts(gateway, since)
    assert [(p, b["model"]) for p, _, b in sent] == [(CHAT, "my-own-model"), (CHAT, "gpt-4o-mini")]
    assert "sluice_models" not in sent[1][2]
    assert all("x-sluice-cluster" not in h and "x-sluice-api" not in h for _, h, _ in sent)


def test_credentials_never_reach_answers_or_logs(gateway):
    # Run last in this module: everything above went through the gateway by now.
    r = post(gateway, ask(), headers={"x-mock-fail-model": f"{PRIMARY}=503"})
    assert OPENAI_SECRET not in r.text and ANTHROPIC_SECRET not in r.text
    assert all(OPENAI_SECRET not in v and ANTHROPIC_SECRET not in v for v in r.headers.values())
    time.sleep(0.5)  # log flush interval
    logs = gateway.envoy_log() + json.dumps(gateway.access_log())
    assert "sluice.provider_adapter: configured" in logs
    assert OPENAI_SECRET not in logs and ANTHROPIC_SECRET not in logs
    lines = [l for l in gateway.access_log() if l.get("route_logical") == "chat-quality"]
    assert {l["answered_by"] for l in lines} >= {"openai", "anthropic"}
    assert any(str(l["attempts"]) == "2" for l in lines)


def test_azure_openai_deployment_path_and_api_key_header(tmp_path):
    """An OpenAI-compatible provider with its own path and credential header (Azure OpenAI)."""
    azure = {"providers": {"azure": {
        "api_key_env": "OPENAI_API_KEY", "auth_header": "api-key", "authority": "example.openai.azure.com",
        "chat_path": "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"}}}

    def openai_is_azure(config):
        for cluster in config["static_resources"]["clusters"]:
            if cluster["name"] == "provider_openai":
                options = cluster["typed_extension_protocol_options"]
                [adapter] = [f for o in options.values() for f in o["http_filters"] if f["name"] == "sluice.provider_adapter"]
                adapter["typed_config"]["config"]["configuration"]["value"] = json.dumps(azure)

    with Stack(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=openai_is_azure,
               workdir=tmp_path) as s:
        since = time.time()
        r = post(s, ask("chat-direct"))
        assert r.status_code == 200, r.text
        assert r.headers["x-sluice-provider"] == "azure"
        [request] = [x for x in requests.get(s.mock("/mock/requests")).json() if x["time"] >= since]
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert (request["path"], request["query"]) == ("/openai/deployments/gpt4o-prod/chat/completions",
                                                       "api-version=2024-10-21")
        assert headers["api-key"] == OPENAI_SECRET and "authorization" not in headers
        assert headers["host"] == "example.openai.azure.com"
        assert s.vm_failures() == []


# A minimal request of each API, and whether an OpenAI-schema and an Anthropic-schema provider
# take it (as sent, or translated by the provider adapter: then at the provider's own chat path).
API_REQUESTS = {
    CHAT: ({"messages": [{"role": "user", "content": "Hi"}]}, True, True),
    "/v1/completions": ({"prompt": "Hi"}, True, False),
    "/v1/embeddings": ({"input": "Hi"}, True, False),
    "/v1/responses": ({"input": "Hi"}, True, True),
    "/v1/messages": ({"max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}, True, True),
}


@pytest.mark.parametrize("path", list(API_REQUESTS))
@pytest.mark.parametrize("model,provider", [("chat-direct", "openai"), ("claude-direct", "anthropic")])
def test_every_api_reaches_only_a_provider_that_takes_it(gateway, path, model, provider):
    """A request is sent in its provider's schema or refused: never in the wrong one (an
    Anthropic Messages request to an OpenAI provider at /v1/messages, a Responses request to
    Anthropic at /v1/embeddings)."""
    body, by_openai, by_anthropic = API_REQUESTS[path]
    taken = by_openai if provider == "openai" else by_anthropic
    since = time.time()
    r = post(gateway, {"model": model, **body}, path=path)
    sent = attempts(gateway, since)
    if taken:
        assert r.status_code == 200, r.text
        assert r.headers["x-sluice-provider"] == provider
        [(sent_path, headers, _)] = sent
        native = {"anthropic": ("/v1/messages",), "openai": (CHAT, "/v1/completions", "/v1/embeddings", "/v1/responses")}
        translated = {"anthropic": "/v1/messages", "openai": CHAT}[provider]
        assert sent_path == (path if path in native[provider] else translated)
        assert_credentials(sent_path, headers)
    else:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_api"), error
        assert f"`{provider}`" in error["message"]
        assert sent == []


def test_a_fallback_that_cannot_take_the_request_is_refused_not_sent(gateway):
    """The chain's Anthropic fallback takes no Completions API request: when the OpenAI primary
    fails, the client gets a clear error and nothing goes to Anthropic."""
    since = time.time()
    r = post(gateway, {"model": "chat-quality", "prompt": "Hi"}, path="/v1/completions",
             headers={"x-mock-fail-model": f"{PRIMARY}=503"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_api"
    assert [p for p, _, _ in attempts(gateway, since)] == ["/v1/completions"]


def test_a_responses_request_falls_back_to_anthropic_translated_and_comes_back_as_a_response(gateway):
    since = time.time()
    r = post(gateway, {"model": "chat-quality", "input": "Hi"}, path="/v1/responses",
             headers={"x-mock-fail-model": f"{PRIMARY}=503"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response" and r.headers["x-sluice-provider"] == "anthropic"
    assert [p for p, _, _ in attempts(gateway, since)] == ["/v1/responses", "/v1/messages"]
