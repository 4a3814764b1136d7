"""The model rewriter inside a real Envoy: logical models, weighted split, rules, the
context-window guard, unknown models and the model catalog."""

import collections
import concurrent.futures
import json
import time
import uuid

import pytest
import requests

from harness.procs import wait_until
from harness.client import post
from harness.stack import DEMO_KEY, assert_config_rejected, key_entry, running

CHAT = "/v1/chat/completions"


def target(model, cluster="provider_openai", weight=1, window=None, provider="openai"):
    t = {"provider": provider, "model": model, "cluster": cluster, "weight": weight}
    if window:
        t["context_window"] = window
    return t


CONFIG = {
    "models": {
        "chat-canary": {"targets": [target("gpt-4o-mini", weight=90), target("gpt-4.1-mini", weight=10)]},
        "chat-quality": {"targets": [target("gpt-4o")], "owned_by": "platform"},
        "chat-long": {"targets": [target("small-ctx", window=50), target("big-ctx", window=100_000)]},
        "chat-tiny": {"targets": [target("tiny", window=20)]},
        "chat-claude": {"targets": [target("claude-haiku-4-5", cluster="provider_anthropic",
                                           provider="anthropic")]},
        "chat-sticky": {"targets": [target("sticky-a"), target("sticky-b")],
                        "sticky": {"by": "header", "header": "x-session"}},
        # Strategies (each test its own model, so shared figures never mix).
        "chat-busy": {"targets": [target("busy-a"), target("busy-b")], "strategy": "least_busy"},
        "chat-latency": {"targets": [target("lat-slow"), target("lat-fast")], "strategy": "latency"},
        "chat-cost": {"targets": [target("cost-dear"), target("cost-cheap")], "strategy": "cost"},
        "chat-usage": {"targets": [target("use-a"), target("use-b")], "strategy": "usage"},
    },
    "prices": {"cost-dear": {"input": 5, "output": 15}, "cost-cheap": {"input": 0.1, "output": 0.4}},
    "rules": [
        {"name": "tier-header", "when": {"header": {"name": "x-model-tier", "values": ["quality"]}},
         "route_to": "chat-quality"},
        {"name": "research-team", "when": {"teams": ["research"]}, "route_to": "chat-quality"},
        {"name": "long-prompts", "when": {"models": ["chat-canary"], "prompt_tokens_over": 2000},
         "route_to": "chat-long"},
        {"name": "hard-prompts", "when": {"models": ["auto"], "complexity_over": 0.5}, "route_to": "chat-quality"},
        {"name": "code-task", "when": {"models": ["auto"], "tasks": ["code"]}, "route_to": "chat-quality"},
        {"name": "auto-default", "when": {"models": ["auto"]}, "route_to": "chat-canary"},
    ],
}


def body(model, content="What is the capital of France?", **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def gateway():
    budget = {"keys": [key_entry(DEMO_KEY, "demo", team="demo"), key_entry("sk-research", "r", team="research")]}
    yield from running(configs={"sluice.model_rewriter": CONFIG, "sluice.budget_enforcer": budget})


def routed(stack, marker):
    """The body the provider received for the request whose prompt holds `marker`."""
    seen = requests.get(stack.mock("/mock/requests")).json()
    sent = next(json.loads(r["body"]) for r in reversed(seen) if marker in r["body"])
    return sent


def test_logical_model_is_rewritten_and_facts_published(gateway):
    marker = uuid.uuid4().hex
    r = post(gateway, body("chat-quality", f"hello {marker}"))
    assert r.status_code == 200
    assert routed(gateway, marker)["model"] == "gpt-4o"
    line = wait_until(lambda: next((l for l in gateway.access_log() if l.get("route_model") == "gpt-4o"
                                    and l.get("route_logical") == "chat-quality"), None), "log line")
    assert line["model"] == "chat-quality"  # what the client asked for
    assert line["upstream"] == "provider_openai"
    assert line["provider"] == "openai"


def test_weighted_split_within_3_percent_over_2000_requests(gateway):
    requests.delete(gateway.mock("/mock/requests"))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: post(gateway, body("chat-canary")).status_code, range(2000)))
    assert codes.count(200) == 2000
    lines = [l for l in gateway.access_log() if l.get("route_logical") == "chat-canary"]
    counts = collections.Counter(l["route_model"] for l in lines[-2000:])
    share = counts["gpt-4.1-mini"] / 2000
    print(f"\ncanary share over 2000 requests: {share:.3f} (target 0.100)")
    assert abs(share - 0.10) <= 0.03, counts


def test_routes_to_another_cluster(gateway):
    r = post(gateway, body("chat-claude"))
    assert r.status_code == 200
    line = wait_until(lambda: next((l for l in gateway.access_log() if l.get("route_logical") == "chat-claude"), None),
                      "log line")
    assert line["upstream"] == "provider_anthropic"
    assert line["provider"] == "anthropic"


def test_sticky_by_header(gateway):
    for session in ["s1", "s2", "s3", "s4"]:
        models = set()
        for _ in range(5):
            marker = uuid.uuid4().hex
            assert post(gateway, body("chat-sticky", marker), headers={"x-session": session}).status_code == 200
            models.add(routed(gateway, marker)["model"])
        assert len(models) == 1, (session, models)


@pytest.mark.parametrize("payload,headers,key,rule,model", [
    (body("chat-canary"), {"x-model-tier": "quality"}, DEMO_KEY, "tier-header", "gpt-4o"),
    (body("chat-canary"), {}, "sk-research", "research-team", "gpt-4o"),
    (body("chat-canary", "word " * 12000), {}, DEMO_KEY, "long-prompts", "big-ctx"),
    (body("auto", "Refactor this step by step:\n```python\nprint(1)\n```"), {}, DEMO_KEY, "hard-prompts", "gpt-4o"),
    (body("auto", "Write a function"), {"x-sluice-task": "code"}, DEMO_KEY, "code-task", "gpt-4o"),
])
def test_rules(gateway, payload, headers, key, rule, model):
    marker = uuid.uuid4().hex
    payload["messages"].append({"role": "user", "content": marker})
    r = post(gateway, payload, key=key, headers=headers)
    assert r.status_code == 200
    assert routed(gateway, marker)["model"] == model
    line = wait_until(lambda: next((l for l in reversed(gateway.access_log()) if l.get("route_rule") == rule), None),
                      f"a log line for rule {rule}")
    assert line["route_model"] == model


def test_simple_auto_prompt_takes_the_default_rule(gateway):
    marker = uuid.uuid4().hex
    assert post(gateway, body("auto", f"hi {marker}")).status_code == 200
    assert routed(gateway, marker)["model"] in ("gpt-4o-mini", "gpt-4.1-mini")


def sent_models(stack, markers):
    seen = requests.get(stack.mock("/mock/requests")).json()
    by_marker = {}
    for r in seen:
        for m in markers:
            if m in r["body"]:
                by_marker[m] = json.loads(r["body"])["model"]
    return [by_marker[m] for m in markers]


def test_least_busy_spreads_requests_in_flight(gateway):
    markers = [uuid.uuid4().hex for _ in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda m: post(gateway, body("chat-busy", m), headers={"x-mock-latency-ms": "800"}).status_code,
                              markers))
    assert codes == [200] * 10
    counts = collections.Counter(sent_models(gateway, markers))
    print(f"\nleast busy, 10 concurrent slow requests: {dict(counts)}")
    assert min(counts.values()) >= 3, counts


def test_latency_prefers_the_faster_target(gateway):
    slow = {"x-mock-slow-model": "lat-slow=300"}
    markers = [uuid.uuid4().hex for _ in range(8)]
    for m in markers:
        assert post(gateway, body("chat-latency", m), headers=slow).status_code == 200
    models = sent_models(gateway, markers)
    # Both are measured first; from then on the fast one wins.
    assert "lat-slow" in models[:3]
    assert models[-4:] == ["lat-fast"] * 4, models


def test_cost_takes_the_cheapest_healthy_target(gateway):
    markers = [uuid.uuid4().hex for _ in range(3)]
    assert post(gateway, body("chat-cost", markers[0])).status_code == 200
    # The cheap one fails: the next requests go to the dear one while it counts as unhealthy.
    assert post(gateway, body("chat-cost", markers[1]), headers={"x-mock-status": "503"}).status_code == 503
    assert post(gateway, body("chat-cost", markers[2])).status_code == 200
    assert sent_models(gateway, markers) == ["cost-cheap", "cost-cheap", "cost-dear"]


def test_usage_rotates_by_tokens_this_minute(gateway):
    # Usage counts per wall-clock minute: all six requests must fall in one (a clean-clone run
    # once crossed a minute after the first request and saw the targets alternate).
    if time.time() % 60 > 45:
        time.sleep(60.2 - time.time() % 60)
    markers = [uuid.uuid4().hex for _ in range(6)]
    models = []
    for i, m in enumerate(markers):
        # The first request is heavy: the other target takes the next ones until it catches up.
        usage = {"x-mock-prompt-tokens": "500" if i == 0 else "100", "x-mock-completion-tokens": "0"}
        assert post(gateway, body("chat-usage", m), headers=usage).status_code == 200
        models.append(sent_models(gateway, [m])[0])
        # The stream's end (where tokens are counted) trails the client's last byte; generous
        # on a loaded machine.
        time.sleep(0.3)
    first = models[0]
    other = next(x for x in ("use-a", "use-b") if x != first)
    assert models[1:5] == [other] * 4, models


def test_context_window_guard(gateway):
    r = post(gateway, body("chat-tiny", "word " * 400))
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "context_length_exceeded", "messages")
    assert "20 tokens" in err["message"]


def test_unknown_model_is_404(gateway):
    r = post(gateway, body("gpt-9-ultra"))
    assert r.status_code == 404
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    assert "gpt-9-ultra" in err["message"]


def test_models_catalog(gateway):
    r = requests.get(gateway.url("/v1/models"), headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert r.status_code == 200
    listed = r.json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == sorted(CONFIG["models"])
    one = requests.get(gateway.url("/v1/models/chat-quality"), headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert one.json() == {"id": "chat-quality", "object": "model", "created": 0, "owned_by": "platform"}
    missing = requests.get(gateway.url("/v1/models/nope"), headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert missing.status_code == 404
    # The catalog sits behind the budget enforcer: no key, no list.
    assert requests.get(gateway.url("/v1/models")).status_code == 401


def test_streams_are_routed_and_counted(gateway):
    r = post(gateway, body("chat-quality", stream=True))
    assert r.status_code == 200
    assert "data: [DONE]" in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"[1]", b"\xff\xfe"])
def test_unreadable_bodies_pass_to_the_budget_enforcer_verdict(gateway, raw):
    r = requests.post(gateway.url(CHAT), data=raw, headers={"authorization": f"Bearer {DEMO_KEY}"})
    assert r.status_code == 400


# One case per module proves Envoy refuses the config and logs the field; every field's message
# is unit-tested in Rust (src/config.rs).
def test_bad_config_is_rejected_with_the_field_named():
    config = {"models": {"m": {"targets": [target("x")]}}, "rules": [{"name": "r", "when": {}, "route_to": "nope"}]}
    assert_config_rejected("sluice.model_rewriter", ".rules[0].route_to", config)


# --- provider translation (the provider adapter, an upstream filter in provider_anthropic) -------

def sdk_client(stack):
    import openai
    return openai.OpenAI(base_url=stack.url("/v1"), api_key=DEMO_KEY, max_retries=0)


def test_openai_sdk_through_an_anthropic_provider_json(gateway):
    requests.delete(gateway.mock("/mock/requests"))
    answer = sdk_client(gateway).chat.completions.create(
        model="chat-claude", max_tokens=50, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-prompt-tokens": "17", "x-mock-completion-tokens": "6"},
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "The capital of France is Paris."
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (17, 6)
    sent = requests.get(gateway.mock("/mock/requests")).json()[-1]
    assert sent["path"] == "/v1/messages"
    body = json.loads(sent["body"])
    assert (body["model"], body["system"], body["max_tokens"], body["stop_sequences"]) == \
        ("claude-haiku-4-5", "Be brief.", 50, ["END"])
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]
    assert sent["headers"].get("anthropic-version") == "2023-06-01"
    # The token counter, behind the adapter, counts the translated answer.
    line = wait_until(lambda: next((l for l in reversed(gateway.access_log())
                                    if l.get("route_logical") == "chat-claude" and l.get("completion_tokens") == "6"),
                                   None), "counted log line")
    assert line["prompt_tokens"] == "17" and line["upstream"] == "provider_anthropic"


def test_openai_sdk_through_an_anthropic_provider_stream(gateway):
    stream = sdk_client(gateway).chat.completions.create(
        model="chat-claude", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Capital of France?"}],
        extra_headers={"x-mock-prompt-tokens": "11", "x-mock-completion-tokens": "4", "x-mock-chunk-bytes": "7"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and (usage[-1].prompt_tokens, usage[-1].completion_tokens) == (11, 4)


def test_anthropic_errors_come_back_openai_style(gateway):
    import openai
    with pytest.raises(openai.APIStatusError) as raised:
        sdk_client(gateway).chat.completions.create(
            model="chat-claude", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": "529"})
    # Anthropic's 529 overloaded_error keeps its status; its type becomes OpenAI's for a provider-side failure.
    assert raised.value.status_code == 529 and isinstance(raised.value, openai.InternalServerError)
    assert raised.value.body["type"] == "server_error" and raised.value.body["message"]


def test_native_anthropic_requests_pass_untranslated(gateway):
    r = requests.post(gateway.url("/v1/messages"), headers={"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"},
                      json={"model": "chat-claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.json()["type"] == "message"
