"""Endpoint picking in a self-hosted pool against Envoy's own balancing, in real Envoy in front of
the simulated vLLM pool (harness/vllm_pool.py, profile `bench`: three endpoints with 4 slots and
a 6,000-token KV cache and room for 90 prefix blocks each, one 1.6x slower, `sql-lora` loaded on one and `chat-lora` on
another, at most two adapters per endpoint, 200 ms to load one). Part of `make bench`
(`--variants pool`); alone: `python -m harness.pool_bench`.

One gateway, three logical models on the same three endpoints:
- `picked`: the model rewriter picks the endpoint (headroom, LoRA and prefix affinity) and
  Envoy's override-host policy sends the request there;
- `least_request`: the same cluster without a pick (the policy's fallback, Envoy's
  least-request balancing);
- `round_robin`: a copy of the cluster with Envoy's round robin.

The load is skewed: a closed loop of `CLIENTS` clients; 40% of requests for two LoRA adapters
(`sql-lora` 25%, `chat-lora` 15%), the rest for the base model; every request starts with one
of four long system prompts (about 600 tokens, chosen 55/25/12/8%) and ends with its own
question; 48 output tokens. Modes alternate in rounds; the figures are medians over rounds.
"""

import argparse
import concurrent.futures
import copy
import json
import random
import statistics
import threading
import time
import uuid

import requests

from .procs import wait_until
from .stack import DEMO_KEY, Stack, dicts
from .vllm_pool import PROFILES

PROFILE_LORAS = {f"vllm-{i}": spec.get("loras", []) for i, spec in enumerate(PROFILES["bench"])}

CLIENTS = 16
REQUESTS = 240
ROUNDS = 3
OUT_TOKENS = 24
BASE = "llama-3.1-8b"
MODES = {"picked": "pool-picked", "least_request": "pool-least", "round_robin": "pool-rr"}
SYSTEMS = [(f"You are assistant {name}. " + f"Policy {name}: answer briefly, cite the handbook, keep a formal tone. " * 30,
            weight) for name, weight in [("alpha", 55), ("beta", 25), ("gamma", 12), ("delta", 8)]]
ADAPTERS = [("sql-lora", 20), ("chat-lora", 15), ("code-lora", 10), (BASE, 55)]


def target(model, cluster, pool=None):
    t = {"provider": "vllm", "model": model, "cluster": cluster}
    return {**t, "pool": pool} if pool else t


def rewriter(stack):
    models = {}
    for adapter, _ in ADAPTERS:
        models[f"pool-picked/{adapter}"] = {"targets": [target(adapter, "pool_vllm", "gpu")]}
        models[f"pool-least/{adapter}"] = {"targets": [target(adapter, "pool_vllm")]}
        models[f"pool-rr/{adapter}"] = {"targets": [target(adapter, "pool_vllm_rr")]}
    return {"models": models, "pools": {"gpu": {"endpoints": stack.pool_endpoints}}}


def with_round_robin(config):
    """A copy of `pool_vllm` balanced round robin, and its route."""
    clusters = config["static_resources"]["clusters"]
    pool = next(c for c in clusters if c["name"] == "pool_vllm")
    rr = copy.deepcopy(pool)
    rr["name"] = rr["load_assignment"]["cluster_name"] = "pool_vllm_rr"
    rr.pop("load_balancing_policy", None)
    rr["lb_policy"] = "ROUND_ROBIN"
    clusters.append(rr)
    for routes in (node["routes"] for node in dicts(config) if isinstance(node.get("routes"), list)):
        for i, route in enumerate(routes):
            if (route.get("route") or {}).get("cluster") == "pool_vllm":
                twin = copy.deepcopy(route)
                twin["route"]["cluster"] = "pool_vllm_rr"
                twin["match"]["headers"][0]["string_match"]["exact"] = "pool_vllm_rr"
                routes.insert(i + 1, twin)
                return


def workload(seed):
    rng = random.Random(seed)
    draws = []
    for _ in range(REQUESTS):
        system = rng.choices([s for s, _ in SYSTEMS], weights=[w for _, w in SYSTEMS])[0]
        adapter = rng.choices([a for a, _ in ADAPTERS], weights=[w for _, w in ADAPTERS])[0]
        draws.append((system, adapter))
    return draws


def run(stack, mode, draws) -> dict:
    prefix = MODES[mode]
    url, headers = stack.url("/v1/chat/completions"), {"authorization": f"Bearer {DEMO_KEY}"}
    # Every run starts from the profile's adapters and an empty prefix cache.
    for name, loras in PROFILE_LORAS.items():
        stack.pool_change(name, loras=loras, flush_cache=True)
    before = {e["name"]: e for e in stack.pool()}
    local = threading.local()

    def one(draw):
        system, adapter = draw
        session = local.__dict__.setdefault("session", requests.Session())
        body = {"model": f"{prefix}/{adapter}", "max_tokens": OUT_TOKENS,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Question {uuid.uuid4().hex}: what does the policy say?"}]}
        started = time.perf_counter()
        r = session.post(url, json=body, headers=headers, timeout=120)
        took = time.perf_counter() - started
        return r.status_code, took

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(one, draws))
    elapsed = time.perf_counter() - started
    after = {e["name"]: e for e in stack.pool()}
    times = sorted(t for status, t in results if status == 200)
    served = {name: after[name]["served"] - before[name]["served"] for name in after}
    queries = sum(after[n]["prefix_queries"] - before[n]["prefix_queries"] for n in after)
    hits = sum(after[n]["prefix_hits"] - before[n]["prefix_hits"] for n in after)
    return {
        "ok": len(times),
        "failed": len(results) - len(times),
        "p50_ms": times[len(times) // 2] * 1000 if times else None,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000 if times else None,
        "throughput_rps": len(times) / elapsed,
        "served": served,
        "lora_loads": sum(after[n]["lora_loads"] - before[n]["lora_loads"] for n in after),
        "prefix_hit_ratio": hits / queries if queries else 0.0,
    }


def medians(rounds) -> dict:
    out = {}
    for key in ["p50_ms", "p99_ms", "throughput_rps", "lora_loads", "prefix_hit_ratio"]:
        values = [r[key] for r in rounds if r[key] is not None]
        out[key] = round(statistics.median(values), 3 if key == "prefix_hit_ratio" else 1) if values else None
    out["failed"] = sum(r["failed"] for r in rounds)
    out["served"] = {name: sum(r["served"][name] for r in rounds) for name in rounds[0]["served"]}
    return out


def measure(rounds=ROUNDS) -> dict:
    with Stack(configs={"sluice.model_rewriter": rewriter}, with_pool="bench", patch=with_round_robin,
               modules=["sluice.budget_enforcer", "sluice.model_rewriter", "sluice.provider_adapter"]) as stack:
        # Every endpoint scraped, so the first picks have figures.
        wait_until(lambda: stack.metric("sluice_route_scrapes_total", result="ok") >= 2 * len(stack.pool_endpoints),
                   "the pool scraped", 30)
        warm = workload(0)[:CLIENTS]
        for mode in MODES:
            run(stack, mode, warm)
        figures = {mode: [] for mode in MODES}
        for i in range(rounds):
            draws = workload(i + 1)
            # Each round, the modes in a different order, on the same draws.
            for mode in list(MODES)[i % len(MODES):] + list(MODES)[:i % len(MODES)]:
                figures[mode].append(run(stack, mode, draws))
    out = {mode: medians(rounds) for mode, rounds in figures.items()}
    out["shape"] = {"clients": CLIENTS, "requests": REQUESTS, "rounds": rounds, "out_tokens": OUT_TOKENS,
                    "endpoints": 3}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    print(json.dumps(measure(parser.parse_args().rounds), indent=2))


if __name__ == "__main__":
    main()
