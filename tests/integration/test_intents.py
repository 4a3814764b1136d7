"""Semantic routes in a real Envoy with the reference embedder (all-MiniLM-L6-v2): a prompt's
last user turn is embedded once and routed by its nearest intent; below every threshold, or with
the embedder down, the next rule applies; the embedding is shared with the semantic cache."""

import json
import uuid

import pytest
import requests

from harness.client import post
from harness.procs import wait_until
from harness.stack import assert_config_rejected, running

EMBEDDING = {"cluster": "embedder", "authority": "embedder", "model": "all-MiniLM-L6-v2", "timeout_ms": 15_000}
# all-MiniLM-L6-v2 groups by topic more than by task: an intent needs examples across its
# topics (scores of the prompts below: 0.50-0.88 with their intent, under 0.16 with the other).
INTENTS = [
    {"name": "code", "description": "Writing, fixing or explaining program code.",
     "examples": ["Write a Python function that reverses a linked list.", "Fix the bug in this JavaScript function.",
                  "Implement binary search in Rust.", "Write a function that parses a string into an integer.",
                  "Refactor this Java class.", "Write a SQL query that joins two tables.",
                  "Write a Go function that reads a file.", "Write a C function that copies a string."],
     "threshold": 0.4},
    {"name": "chit-chat", "examples": ["Hi there, how are you today?", "Tell me a fun fact about cats.",
                                       "Good morning! Did you sleep well?", "Hello! How is your day going?",
                                       "Thanks, have a nice day!", "What's up? Anything fun planned for the weekend?"],
     "threshold": 0.4},
]


def target(model):
    return {"targets": [{"provider": "openai", "model": model, "cluster": "provider_openai"}]}


def config(embedding=None):
    return {
        "embedding": embedding or EMBEDDING,
        "intents": INTENTS,
        "models": {"auto": target("default-model"), "coder": target("code-model"), "cheap": target("small-model")},
        "rules": [
            {"name": "code", "when": {"models": ["auto"], "intents": ["code"]}, "route_to": "coder"},
            {"name": "chat", "when": {"models": ["auto"], "intents": ["chit-chat"]}, "route_to": "cheap"},
        ],
    }


def ready(stack):
    """The examples are embedded once per worker, just after start."""
    wait_until(lambda: routed(stack, "Write a function in Go that parses JSON.") == "code-model",
               "the intents' examples embedded", 60)


def routed(stack, text, **extra):
    marker = uuid.uuid4().hex
    # The marker finds the request at the mock; in the system prompt, it is not embedded.
    messages = [{"role": "system", "content": f"Request {marker}."}, {"role": "user", "content": text}]
    r = post(stack, {"model": "auto", "messages": messages, **extra})
    assert r.status_code == 200, r.text
    seen = requests.get(stack.mock("/mock/requests")).json()
    return next(json.loads(s["body"])["model"] for s in reversed(seen) if marker in s["body"])


@pytest.fixture(scope="module")
def gateway():
    for stack in running(configs={"sluice.model_rewriter": config()}, with_embedder=True):
        ready(stack)
        yield stack


def test_prompts_go_to_their_intents_model(gateway):
    assert routed(gateway, "Can you refactor this Java class to use streams?") == "code-model"
    assert routed(gateway, "Hey! What's up with you this weekend?") == "small-model"
    line = wait_until(lambda: next((l for l in gateway.access_log() if l.get("route_intent") == "chit-chat"), None),
                      "log line")
    assert line["route_rule"] == "chat" and 0.4 <= float(line["route_intent_score"]) <= 1.0
    assert gateway.metric("sluice_route_intents_total", intent="code") >= 2


def test_far_from_every_intent_the_next_rule_applies(gateway):
    assert routed(gateway, "What were the main causes of the French Revolution in 1789?") == "default-model"
    assert gateway.metric("sluice_route_intents_total", intent="none") >= 1


def test_streams_and_other_schemas_are_read_too(gateway):
    assert routed(gateway, "Write a SQL query joining orders and customers.", stream=True) == "code-model"
    marker = uuid.uuid4().hex
    r = post(gateway, {"model": "auto", "max_tokens": 50, "system": f"Request {marker}.", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Write a C function that copies a string."}]}]},
        path="/v1/messages", headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    seen = requests.get(gateway.mock("/mock/requests")).json()
    assert next(json.loads(s["body"])["model"] for s in reversed(seen) if marker in s["body"]) == "code-model"


def test_only_the_last_user_turn_is_read(gateway):
    marker = uuid.uuid4().hex
    messages = [{"role": "system", "content": "You are a coding assistant that writes Python functions."},
                {"role": "user", "content": "Write a Python function that sorts a list."},
                {"role": "assistant", "content": "def f(x): return sorted(x)"},
                {"role": "user", "content": "Thanks a lot, have a lovely day!"},
                {"role": "user", "content": f"Request {marker}."}][:-1]
    messages[0]["content"] += f" Request {marker}."
    assert post(gateway, {"model": "auto", "messages": messages}).status_code == 200
    seen = requests.get(gateway.mock("/mock/requests")).json()
    assert next(json.loads(s["body"])["model"] for s in reversed(seen) if marker in s["body"]) == "small-model"


def test_without_the_embedder_intent_rules_do_not_hold():
    down = {**EMBEDDING, "cluster": "no_such_cluster"}
    for stack in running(configs={"sluice.model_rewriter": config(down)}, with_embedder=True):
        assert routed(stack, "Write a Python function that reverses a string.") == "default-model"
        wait_until(lambda: any(l.get("route_intent") == "unavailable" for l in stack.access_log()), "log line")


def test_the_cache_and_the_rewriter_share_one_embedding():
    """With the semantic cache on the same embedding service, the rewriter reads the prompt's
    intent from the cache's embedding of the last user turn: no second callout."""
    cache = {"mode": "semantic", "embedding": EMBEDDING}
    for stack in running(configs={"sluice.model_rewriter": config(), "sluice.semantic_cache": cache},
                         with_embedder=True):
        ready(stack)
        own = stack.metric("sluice_route_embeddings_total", source="own")
        assert routed(stack, "Write a Go function that parses YAML.") == "code-model"
        assert routed(stack, "Hello! How is your day going?") == "small-model"
        assert stack.metric("sluice_route_embeddings_total", source="own") == own
        assert stack.metric("sluice_route_embeddings_total", source="shared") >= 2


@pytest.mark.parametrize("bad, path", [
    ({"intents": [{"name": "x"}]}, ".intents[0].examples"),
    ({"intents": [{"name": "x", "examples": ["a"], "threshold": 0}]}, ".intents[0].threshold"),
    ({"models": {"m": target("m")}, "rules": [{"name": "r", "when": {"intents": ["nope"]}, "route_to": "m"}]},
     ".rules[0].when.intents"),
])
def test_bad_intent_configs_are_rejected(bad, path):
    assert_config_rejected("sluice.model_rewriter", path, bad)
