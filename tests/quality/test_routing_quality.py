"""Semantic routes against today's complexity heuristic, end to end in real Envoy with the
reference embedding service (all-MiniLM-L6-v2), on tests/data/routing_prompts.json (324 prompts,
six task kinds; see harness/routing_quality.py, which chose the threshold on the tuning half).

The rewriter has one intent per kind (its examples: the tuning half's prompts of that kind,
`intent_match: centroid`, threshold 0.15) and routes each to a model of that kind's name; a
prompt no intent claims goes to the cheap tier. Every prompt is sent once; its access-log line
says which intent the rewriter read and the complexity score it computed. The heuristic's
`complexity_over` threshold is chosen on the tuning half too (the one that gets most tiers right),
and both are reported on the reporting half: accuracy per kind, tier accuracy (code and reasoning
need the strong model, the other kinds the cheap one), and the latency an intent rule adds (the
same prompts to a model no intent rule can take, which is not embedded)."""

import statistics
import time

import pytest

from harness import routing_quality as rq
from harness.client import post
from harness.procs import wait_until
from harness.stack import running

EMBEDDING = {"cluster": "embedder", "authority": "embedder", "model": "all-MiniLM-L6-v2", "timeout_ms": 15_000}
THRESHOLD = 0.15
HEURISTIC_THRESHOLDS = [round(0.05 * i, 2) for i in range(20)]


def target(model):
    return {"targets": [{"provider": "openai", "model": model, "cluster": "provider_openai"}]}


def config():
    return {
        "embedding": EMBEDDING,
        "intents": rq.intents(THRESHOLD),
        "intent_match": "centroid",
        "models": {**{kind: target(kind) for kind in rq.KINDS}, "cheap": target("cheap-model")},
        "rules": [
            {"name": "direct", "when": {"models": ["direct-*"]}, "route_to": "cheap"},
            *({"name": kind, "when": {"models": ["auto-*"], "intents": [kind]}, "route_to": kind} for kind in rq.KINDS),
            # Never holds for the prompts sent; it makes the rewriter score (and log) complexity.
            {"name": "hard", "when": {"models": ["heuristic"], "complexity_over": 0.5}, "route_to": "reasoning"},
            {"name": "rest", "when": {"models": ["auto-*"]}, "route_to": "cheap"},
        ],
    }


def send(stack, model, text):
    started = time.monotonic()
    r = post(stack, {"model": model, "messages": [{"role": "user", "content": text}]}, timeout=60)
    assert r.status_code == 200, r.text
    return time.monotonic() - started


@pytest.fixture(scope="module")
def measured():
    for stack in running(configs={"sluice.model_rewriter": config()}, with_embedder=True, concurrency=1):
        # The examples are embedded once per worker, just after start.
        wait_until(lambda: send(stack, "auto-ready", "Write a Python function that sorts a list.") is not None
                   and any(line.get("model") == "auto-ready" and line.get("route_intent") == "code"
                           for line in stack.access_log()), "the intents' examples embedded", 90)
        items = rq.prompts()
        latency = {"auto": [], "direct": []}
        for i, p in enumerate(items):
            took = send(stack, f"auto-{i}", p["text"])
            if p["half"] == "reporting":
                # Interleaved, so both see the same machine.
                latency["auto"].append(took)
                latency["direct"].append(send(stack, f"direct-{i}", p["text"]))
        wanted = {f"auto-{i}" for i in range(len(items))}

        def logged():
            by_model = {line.get("model"): line for line in stack.access_log()}
            return wanted <= by_model.keys() and by_model

        yield items, wait_until(logged, "every request's access-log line", 30), latency


def decisions(items, by_model, half):
    out = []
    for i, p in enumerate(items):
        if p["half"] == half:
            line = by_model[f"auto-{i}"]
            intent = line["route_intent"]
            out.append((p, None if intent == "none" else intent, float(line["route_complexity"]), line))
    return out


def test_each_prompt_went_where_its_intent_says(measured):
    items, by_model, _ = measured
    for p, intent, complexity, line in decisions(items, by_model, "tuning") + decisions(items, by_model, "reporting"):
        assert intent is None or intent in rq.KINDS, line
        assert line["route_logical"] == (intent or "cheap") and line["route_rule"] == (intent or "rest"), line
        assert 0.0 <= complexity <= 1.0
        if intent:
            assert float(line["route_intent_score"]) >= THRESHOLD, line


def test_semantic_routes_beat_the_complexity_heuristic_on_the_reporting_half(measured):
    items, by_model, latency = measured
    strong = lambda kind: kind is not None and rq.tier_of(kind) == "strong"  # noqa: E731
    # The heuristic's threshold, chosen on the tuning half.
    tuning = decisions(items, by_model, "tuning")
    heuristic = max(HEURISTIC_THRESHOLDS,
                    key=lambda t: (sum((c > t) == strong(p["kind"]) for p, _, c, _ in tuning), t))
    reporting = decisions(items, by_model, "reporting")
    semantic = rq.figures([(p["kind"], intent) for p, intent, _, _ in reporting])
    heuristic_tier = {kind: [] for kind in rq.KINDS}
    for p, _, c, _ in reporting:
        heuristic_tier[p["kind"]].append((c > heuristic) == strong(p["kind"]))
    semantic_tier = {kind: [] for kind in rq.KINDS}
    for p, intent, _, _ in reporting:
        semantic_tier[p["kind"]].append(rq.tier_of(intent) == rq.tier_of(p["kind"]))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    heuristic_all = mean([x for xs in heuristic_tier.values() for x in xs])
    # Both, in one rule order: intent rules for the strong kinds first, the heuristic after.
    both = mean([(strong(intent) or c > heuristic) == strong(p["kind"]) for p, intent, c, _ in reporting])
    added = [a - d for a, d in zip(latency["auto"], latency["direct"])]
    print(f"\nreporting half, {len(reporting)} prompts; semantic routes (centroid, {THRESHOLD}): accuracy "
          f"{semantic['accuracy']:.3f}, tier accuracy {semantic['tier']:.3f}, unclaimed {semantic['unclaimed']:.3f}; "
          f"complexity heuristic (complexity_over {heuristic}, chosen on the tuning half): tier accuracy {heuristic_all:.3f}; "
          f"intent rules for code and reasoning, then the heuristic: tier accuracy {both:.3f}")
    print("| kind | semantic: kind | semantic: tier | heuristic: tier |\n|---|---|---|---|")
    for kind in rq.KINDS:
        print(f"| {kind} | {semantic['per_kind'][kind]:.2f} | {mean(semantic_tier[kind]):.2f} | "
              f"{mean(heuristic_tier[kind]):.2f} |")
    print(f"latency, embedded (intent rule) vs not: p50 {statistics.median(latency['auto']) * 1000:.1f} ms vs "
          f"{statistics.median(latency['direct']) * 1000:.1f} ms, median added {statistics.median(added) * 1000:.1f} ms")
    assert len(reporting) == 144 and set(semantic["per_kind"]) == set(rq.KINDS)
    # The figures of harness/routing_quality.py (numpy's MiniLM) within a few prompts: the
    # embedding service computes the same model in Rust.
    assert semantic["accuracy"] >= 0.55 and semantic["tier"] >= 0.78
    assert semantic["tier"] > heuristic_all + 0.03
