"""Endpoint picking inside a self-hosted pool, in a real Envoy with the simulated vLLM pool
(harness/vllm_pool.py): the model rewriter scrapes each endpoint's metrics through the
`sluice_scrape` ORIGINAL_DST cluster, picks an endpoint per request (headroom, LoRA and prefix
affinity) and Envoy's override-host policy sends the request there; stale figures and unhealthy
hosts fall back to Envoy's own balancing."""

import collections
import concurrent.futures
import time
import uuid

import pytest
import requests

from harness.client import post
from harness.procs import wait_until
from harness.stack import assert_config_rejected, running

BASE = "llama-3.1-8b"


def rewriter(stack, **pool):
    """The rewriter's config for the stack's simulated pool."""
    return {
        "models": {
            "llama": {"targets": [{"provider": "vllm", "model": BASE, "cluster": "pool_vllm", "pool": "gpu"}]},
            "sql": {"targets": [{"provider": "vllm", "model": "sql-lora", "cluster": "pool_vllm", "pool": "gpu"}]},
        },
        "pools": {"gpu": {"endpoints": stack.pool_endpoints, "prefix_chars": 200, **pool}},
    }


def health_every_second(config):
    """The pool cluster's active health checks every second, one failure enough (a test about them)."""
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "pool_vllm")
    check = cluster["health_checks"][0]
    check.update({"interval": "1s", "no_traffic_interval": "1s", "unhealthy_threshold": 1, "timeout": "1s"})


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.model_rewriter": rewriter}, with_pool=True, patch=health_every_second)


@pytest.fixture(autouse=True)
def reset_pool(gateway):
    for endpoint in gateway.pool():
        gateway.pool_change(endpoint["name"], metrics="ok", health=200, report_waiting=None)
    yield


def ask(stack, model="llama", content=None, system=None, **extra):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": content or f"hello {uuid.uuid4().hex}"}]
    return post(stack, {"model": model, "messages": messages, **extra})


def names(stack):
    return {e["address"]: e["name"] for e in stack.pool()}


def fresh(stack):
    """Waits until every endpoint was scraped again after a change."""
    before = stack.metric("sluice_route_scrapes_total")
    wait_until(lambda: stack.metric("sluice_route_scrapes_total") >= before + 2 * len(stack.pool_endpoints),
               "scrapes", 20)


def test_the_picked_endpoint_answers_and_is_logged(gateway):
    fresh(gateway)
    marker = uuid.uuid4().hex
    r = ask(gateway, content=f"hello {marker}")
    assert r.status_code == 200, r.text
    answered = r.headers["x-pool-endpoint"]
    assert names(gateway)[r.headers["x-sluice-endpoint"]] == answered
    line = wait_until(lambda: next((l for l in gateway.access_log() if l.get("route_endpoint") not in (None, "-")
                                    and l.get("route_pick") == "headroom"), None), "log line")
    order = line["route_endpoint"].split(",")
    assert sorted(order) == sorted(gateway.pool_endpoints), "the pick, then the retries' endpoints"
    assert line["upstream_host"] == order[0], "Envoy sent it where the rewriter said"
    assert gateway.metric("sluice_route_scrapes_total", result="ok") > 0


def test_an_endpoint_without_headroom_is_not_picked(gateway):
    busy = gateway.pool()[0]
    gateway.pool_change(busy["name"], report_waiting=10)
    fresh(gateway)
    answered = collections.Counter(ask(gateway).headers["x-pool-endpoint"] for _ in range(30))
    assert busy["name"] not in answered, answered
    assert len(answered) == 2, "the other two share the load"


def test_lora_requests_go_where_the_adapter_is_loaded(gateway):
    fresh(gateway)
    loaded = next(e for e in gateway.pool() if "sql-lora" in e["loras"])
    answered = collections.Counter(ask(gateway, "sql").headers["x-pool-endpoint"] for _ in range(20))
    assert answered == {loaded["name"]: 20}
    assert gateway.metric("sluice_route_picks_total", reason="lora") >= 20


def test_a_shared_prefix_keeps_its_endpoint(gateway):
    fresh(gateway)
    system = "You are the support assistant of Example Corp. " * 8
    answered = collections.Counter(ask(gateway, system=system).headers["x-pool-endpoint"] for _ in range(15))
    assert len(answered) == 1, answered
    assert gateway.metric("sluice_route_picks_total", reason="prefix") >= 15
    # Different prefixes spread over the pool.
    spread = collections.Counter(ask(gateway, system=f"{uuid.uuid4().hex} " * 30).headers["x-pool-endpoint"]
                                 for _ in range(30))
    assert len(spread) >= 2, spread


def test_a_concurrent_burst_is_not_herded_onto_one_endpoint(gateway):
    fresh(gateway)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: ask(gateway, max_tokens=200), range(24)))
    assert all(a.status_code == 200 for a in answers)
    counts = collections.Counter(a.headers["x-pool-endpoint"] for a in answers)
    assert len(counts) == 3 and max(counts.values()) <= 16, counts


@pytest.mark.parametrize("trouble", ["error", "broken"])
def test_stale_or_unreadable_metrics_leave_it_to_envoy(gateway, trouble):
    for endpoint in gateway.pool():
        gateway.pool_change(endpoint["name"], metrics=trouble)
    # Until the last good figures are stale (2 s), they are still used.
    wait_until(lambda: ask(gateway) and gateway.metric("sluice_route_picks_total", reason="stale") > 0, "stale", 20)
    answers = [ask(gateway) for _ in range(12)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert len({a.headers["x-pool-endpoint"] for a in answers}) >= 2, "Envoy balanced"
    result = "down" if trouble == "error" else "unreadable"
    assert gateway.metric("sluice_route_scrapes_total", result=result) > 0


def test_an_unhealthy_endpoint_is_not_picked(gateway):
    """Envoy 1.40's override-host policy sends a request to the named host whatever its health:
    the rewriter asks each endpoint's /health itself, and Envoy's own checks mark it too."""
    fresh(gateway)
    idle, *others = gateway.pool()
    for other in others:
        # The others claim a queue: the picker's choice is always `idle`.
        gateway.pool_change(other["name"], report_waiting=10)
    fresh(gateway)
    assert {ask(gateway).headers["x-pool-endpoint"] for _ in range(5)} == {idle["name"]}
    gateway.pool_change(idle["name"], health=503)
    wait_until(lambda: gateway.metric("sluice_route_scrapes_total", result="unhealthy") > 0, "health scrape", 20)
    fresh(gateway)
    answers = [ask(gateway) for _ in range(10)]
    assert all(a.status_code == 200 for a in answers)
    assert idle["name"] not in {a.headers["x-pool-endpoint"] for a in answers}
    wait_until(lambda: idle["address"] in failed_hosts(gateway), "Envoy's health check", 20)
    gateway.pool_change(idle["name"], health=200)
    wait_until(lambda: idle["address"] not in failed_hosts(gateway), "healthy again", 20)
    fresh(gateway)
    assert {ask(gateway).headers["x-pool-endpoint"] for _ in range(5)} == {idle["name"]}


def failed_hosts(stack) -> set:
    lines = stack.get_text(stack.admin("/clusters")).splitlines()
    return {line.split("::")[1] for line in lines
            if line.startswith("pool_vllm::") and "::health_flags::" in line and "failed_active_hc" in line}


def test_a_client_cannot_choose_the_endpoint(gateway):
    fresh(gateway)
    target = gateway.pool()[0]
    gateway.pool_change(target["name"], report_waiting=10)
    fresh(gateway)
    answered = {post(gateway, {"model": "llama", "messages": [{"role": "user", "content": uuid.uuid4().hex}]},
                     headers={"x-gateway-destination-endpoint": target["address"]}).headers["x-pool-endpoint"]
                for _ in range(10)}
    assert target["name"] not in answered


def test_streams_are_picked_too(gateway):
    fresh(gateway)
    r = ask(gateway, "sql", stream=True)
    assert r.status_code == 200 and "[DONE]" in r.text
    assert "sql-lora" in next(e for e in gateway.pool() if e["name"] == r.headers["x-pool-endpoint"])["loras"]


def test_scrapes_are_shared_by_the_workers(gateway):
    """One scrape per endpoint per interval, whatever the number of workers (2 here)."""
    before, started = gateway.metric("sluice_route_scrapes_total"), time.monotonic()
    time.sleep(3)
    elapsed = time.monotonic() - started
    per_endpoint_per_second = (gateway.metric("sluice_route_scrapes_total") - before) / elapsed / len(gateway.pool_endpoints)
    # Interval 200 ms: 5 a second at most (not 10 with two workers each scraping).
    assert 2 <= per_endpoint_per_second <= 5.5, per_endpoint_per_second


@pytest.mark.parametrize("pools, path", [
    ({"gpu": {"endpoints": []}}, ".pools.gpu.endpoints"),
    ({"gpu": {"endpoints": ["vllm-0.pool:8000"]}}, ".pools.gpu.endpoints[0]"),
    ({"gpu": {"endpoints": ["127.0.0.1:1"], "scrape": {"stale_ms": 100}}}, ".pools.gpu.scrape.stale_ms"),
    ({"gpu": {"endpoints": ["127.0.0.1:1"], "engine": "tgi"}}, ".pools.gpu.engine"),
])
def test_bad_pool_configs_are_rejected(pools, path):
    assert_config_rejected("sluice.model_rewriter", path, {"pools": pools})
