"""Latency breakers and bounded retries in a real Envoy with the mock provider: a target whose
p95 latency (or time to first byte) is over its threshold is skipped by every worker, then probed
and closed again; a chain whose providers all fail under load gets a bounded number of attempts
(the shipped retry budget), not a multiple of the load."""

import collections
import concurrent.futures
import json
import time
import uuid

import pytest
import requests

from harness.client import post
from harness.procs import wait_until
from harness.stack import no_ejection, running

SLOW, FAST = "breaker-slow", "breaker-fast"
BREAKER = {"p95_latency_ms": 250, "window_ms": 60_000, "min_samples": 3, "open_ms": 3_000}
CONFIG = {
    "models": {
        "chat-breaker": {"targets": [{"provider": "openai", "model": SLOW, "cluster": "provider_openai"},
                                     {"provider": "openai", "model": FAST, "cluster": "provider_openai"}],
                         "breaker": BREAKER},
        "chat-ttft": {"targets": [{"provider": "openai", "model": "ttft-slow", "cluster": "provider_openai"},
                                  {"provider": "openai", "model": "ttft-fast", "cluster": "provider_openai"}],
                      "breaker": {"p95_ttft_ms": 250, "min_samples": 3, "open_ms": 60_000}},
        # Every provider of the seed's chain.
        "chat-chain": {"targets": [{"provider": "openai", "model": "gpt-4o", "cluster": "chain_seed"}],
                       "fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4-6"},
                                     {"provider": "gemini", "model": "gemini-2.5-flash"},
                                     {"provider": "openai_last", "model": "gpt-4o-mini"}]},
    },
}
KEYS = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g", "AWS_BEARER_TOKEN_BEDROCK": "b"}


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=no_ejection)


def ask(stack, model="chat-breaker", slow=True, **extra):
    headers = {"x-mock-slow-model": f"{SLOW}=600"} if slow else {}
    payload = {"model": model, "messages": [{"role": "user", "content": uuid.uuid4().hex}], **extra}
    return post(stack, payload, headers={**headers, **extra.pop("headers", {})})


def model_of(stack, response):
    return response.json()["model"]


def test_a_slow_target_opens_its_breaker_for_every_worker_then_a_probe_closes_it(gateway):
    # Until three slow answers were seen, both targets are drawn.
    wait_until(lambda: ask(gateway).ok and gateway.metric("sluice_route_breaker_total", state="open") >= 1,
               "breaker opened", 60)
    assert gateway.metric("sluice_route_breaker_total", model=SLOW, state="open") == 1
    opened = wait_until(lambda: next((l for l in gateway.access_log() if l.get("route_breaker") == "open"), None),
                        "log line")
    assert opened["route_model"] == SLOW
    # Open: every request, on both workers, goes to the fast target.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: ask(gateway), range(30)))
    assert {model_of(gateway, a) for a in answers} == {FAST}
    skipped = wait_until(lambda: [l for l in gateway.access_log() if l.get("route_skipped") == f"openai/{SLOW}"],
                         "skipped lines")
    assert skipped
    # After open_ms one request probes the slow target; it is fast now, so the breaker closes.
    time.sleep(BREAKER["open_ms"] / 1000 + 0.2)
    wait_until(lambda: ask(gateway, slow=False).ok and gateway.metric("sluice_route_breaker_total", state="closed") >= 1,
               "breaker closed", 30)
    assert gateway.metric("sluice_route_breaker_total", model=SLOW, state="closed") == 1
    # The probe's own line says what it did.
    wait_until(lambda: any(l.get("route_breaker") == "closed" and l.get("route_model") == SLOW
                           for l in gateway.access_log()), "the probe's line")
    drawn = collections.Counter(model_of(gateway, ask(gateway, slow=False)) for _ in range(30))
    assert drawn[SLOW] > 0 and drawn[FAST] > 0, drawn


def test_a_slow_first_byte_opens_a_ttft_breaker(gateway):
    headers = {"x-mock-slow-model": "ttft-slow=500"}

    def streamed():
        r = post(gateway, {"model": "chat-ttft", "stream": True,
                           "messages": [{"role": "user", "content": uuid.uuid4().hex}]}, headers=headers)
        assert r.status_code == 200 and "[DONE]" in r.text
        return r

    wait_until(lambda: streamed() and gateway.metric("sluice_route_breaker_total", model="ttft-slow", state="open") >= 1,
               "ttft breaker", 60)
    models = set()
    for _ in range(10):
        r = streamed()
        chunk = next(json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {"))
        models.add(chunk["model"])
    assert models == {"ttft-fast"}


def test_a_failing_chain_under_load_gets_bounded_attempts(gateway):
    """80 concurrent requests to a chain of 4 providers that all fail: without a budget each
    would be tried 4 times (320 attempts); the retry budget (20% of requests in flight, at
    least 3) keeps the attempts near the load."""
    requests.delete(gateway.mock("/mock/requests"))
    marker = uuid.uuid4().hex
    load = 80

    def failing(_):
        return post(gateway, {"model": "chat-chain", "messages": [{"role": "user", "content": marker}]},
                    headers={"x-mock-status": "503"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(load) as pool:
        answers = list(pool.map(failing, range(load)))
    assert all(a.status_code == 503 for a in answers), collections.Counter(a.status_code for a in answers)
    seen = requests.get(gateway.mock("/mock/requests")).json()
    attempts = sum(1 for r in seen if marker in r["body"])
    assert load <= attempts <= load * 1.5, attempts
    overflow = gateway.metric("envoy_cluster_upstream_rq_retry_overflow", envoy_cluster_name="chain_seed")
    assert overflow > 0, "the budget turned retries away"


def checked_every_second(config):
    """The provider clusters' active health checks every second (a test about them)."""
    no_ejection(config)
    for cluster in config["static_resources"]["clusters"]:
        for check in cluster.get("health_checks") or []:
            check.update({"interval": "1s", "unhealthy_interval": "1s", "no_traffic_interval": "1s",
                          "no_traffic_healthy_interval": "1s"})


def health(stack, cluster):
    lines = stack.get_text(stack.admin("/clusters")).splitlines()
    return {line.rsplit("::", 1)[-1] for line in lines if line.startswith(f"{cluster}::") and "::health_flags::" in line}


def test_a_provider_failing_its_health_checks_is_skipped_until_they_pass():
    """The shipped provider checks (GET of the model list, 3 failures): a primary whose checks
    fail gets no attempts, its chain's requests go straight to the fallback; once its checks
    pass again it answers again."""
    for stack in running(configs={"sluice.model_rewriter": CONFIG}, provider_keys=KEYS, patch=checked_every_second,
                         modules=["sluice.budget_enforcer", "sluice.model_rewriter", "sluice.provider_adapter"]):
        first = lambda: post(stack, {"model": "chat-chain", "messages": [{"role": "user", "content": "hi"}]})  # noqa: E731
        assert first().json()["model"] == "gpt-4o"
        try:
            requests.post(stack.mock("/mock/health-checks"), json={"host": "api.openai.com", "status": 503}).raise_for_status()
            wait_until(lambda: health(stack, "provider_openai") == {"/failed_active_hc"}, "the primary unhealthy", 30)
            # The main thread marks it; each worker hears of it a moment later.
            wait_until(lambda: first().json()["model"] == "claude-sonnet-4-6", "every worker skipping it", 30)
            requests.delete(stack.mock("/mock/requests"))
            for _ in range(5):
                r = first()
                assert r.status_code == 200 and r.json()["model"] == "claude-sonnet-4-6", r.text
            seen = requests.get(stack.mock("/mock/requests")).json()
            assert [s["path"] for s in seen] == ["/v1/messages"] * 5, "no attempt at the unhealthy primary"
        finally:
            requests.post(stack.mock("/mock/health-checks"), json={"host": "api.openai.com", "status": 200})
        wait_until(lambda: health(stack, "provider_openai") == {"healthy"}, "the primary healthy again", 30)
        wait_until(lambda: first().json()["model"] == "gpt-4o", "the primary answering again", 30)
