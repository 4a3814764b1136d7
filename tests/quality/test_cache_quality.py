"""Hit quality of the semantic cache on the project's labelled pairs (tests/data/semantic_pairs.json),
end to end: the real module in Envoy, the reference embedding service, Redis, default threshold.

The file holds 100 questions, each with 5 paraphrases that should hit and 5 near misses that must
not (tagged by what differs), in a tuning half (46 questions: the guard's rules and the default
threshold were chosen on them) and a reporting half (54 questions, never used to choose). Every
question is asked once (its answer stored); then every paraphrase and near miss of the reporting
half is asked with `Cache-Control: no-store`, so only questions are ever cached. A hit is right
when it is a paraphrase answered with its own question's answer; every other hit is wrong. All
questions share one scope, so a hit on another question counts against precision too.

Precision is reported with its 95% Wilson interval: with about 120 hits, one wrong hit moves the
point by 0.01 but the lower bound by more, so the bound is what the target is about.
"""

import json
import math
import time
from pathlib import Path

import pytest
import requests

from harness.procs import wait_until
from harness.stack import Stack, running

PAIRS = Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json"
CACHE = "sluice.semantic_cache"
# The mock provider's scripted ideal verifier (harness/mock_provider.py, `rerank`).
VERIFIER = {"kind": "rerank", "cluster": "provider_openai", "authority": "mock", "timeout_ms": 300}


def wilson(successes, trials, z=1.96):
    """The 95% Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    denominator = 1 + z * z / trials
    return (centre - spread) / denominator, (centre + spread) / denominator


def test_the_interval_is_the_textbook_one():
    low, high = wilson(120, 120)
    assert 0.968 < low < 0.970 and high == pytest.approx(1.0)
    low, high = wilson(118, 120)
    assert 0.93 < low < 0.95 and 0.99 < high < 1.0


def ask(stack, text, answer=None):
    headers = {"x-mock-text": answer} if answer else {"cache-control": "no-store"}
    return requests.post(stack.url("/v1/chat/completions"), timeout=30, headers=headers,
                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})


def measure(stack, half="reporting"):
    groups = json.loads(PAIRS.read_text())
    # Without the guard a question can hit an earlier one, and is then not stored.
    stored = sum(ask(stack, group["question"], f"group-{i}").headers["x-sluice-cache"] == "miss"
                 for i, group in enumerate(groups))
    wait_until(lambda: len(stack.redis("KEYS", "sluice:cache:*:x:*").split()) == stored or None, "stored")
    right = wrong = paraphrases = near_misses = 0
    wrong_examples, seconds = [], []
    for i, group in enumerate(groups):
        if group["half"] != half:
            continue
        asked = [(p, True) for p in group["paraphrases"]] + [(m["text"], False) for m in group["near_misses"]]
        for text, is_paraphrase in asked:
            paraphrases += is_paraphrase
            near_misses += not is_paraphrase
            started = time.monotonic()
            response = ask(stack, text)
            seconds.append(time.monotonic() - started)
            assert response.status_code == 200
            if response.headers["x-sluice-cache"] != "hit":
                continue
            answer = response.json()["choices"][0]["message"]["content"]
            if is_paraphrase and answer == f"group-{i}":
                right += 1
            else:
                wrong += 1
                wrong_examples.append(f"{group['question']!r} / {text!r} answered as {answer}")
    hits = right + wrong
    low, high = wilson(right, hits)
    seconds.sort()
    return {
        "stored": stored, "paraphrases": paraphrases, "near_misses": near_misses, "hits": hits, "wrong": wrong,
        "precision": right / hits if hits else 1.0, "precision_95": (round(low, 3), round(high, 3)),
        "recall": right / paraphrases, "median_ms": round(1000 * seconds[len(seconds) // 2], 2),
        "wrong_examples": wrong_examples,
    }


@pytest.fixture(scope="module")
def embedder_stack():
    yield from running(configs={CACHE: {"namespace": "global"}}, modules=[CACHE], with_embedder=True)


def test_the_guard_alone_reaches_the_targets_on_the_reporting_half(embedder_stack):
    result = measure(embedder_stack)
    assert result["stored"] == 100
    print(f"\nsemantic cache, defaults (threshold 0.75, guard on), reporting half: {result}")
    assert result["paraphrases"] == 270 and result["near_misses"] == 270
    assert result["precision"] >= 0.98, result["wrong_examples"]
    assert result["precision_95"][0] >= 0.95, result
    assert result["recall"] >= 0.45, result


def test_without_the_guard_precision_falls_short(embedder_stack):
    with Stack(configs={CACHE: {"namespace": "global", "guard": False}}, modules=[CACHE],
               embedder_from=embedder_stack) as s:
        result = measure(s)
    print(f"\nsemantic cache, threshold 0.75, guard off: {result | {'wrong_examples': len(result['wrong_examples'])}}")
    assert result["precision"] < 0.9 and result["recall"] > 0.6, result


def test_an_ideal_verifier_settles_the_grey_zone(embedder_stack):
    """The guard's grey zone goes to the verifier and is served or refused as it says: with a
    verifier that always knows, recall rises and precision stays; hard-rule misses never ask."""
    with Stack(configs={CACHE: {"namespace": "global", "verify": VERIFIER}}, modules=[CACHE],
               embedder_from=embedder_stack) as s:
        result = measure(s)
        asked = [r for r in requests.get(s.mock("/mock/requests"), timeout=10).json() if r["path"] == "/rerank"]
        served = s.metric("sluice_cache_verify_total", decision="same", source="service")
        refused = s.metric("sluice_cache_verify_total", decision="different", source="service")
        # The verifier's cost inside the lookup: lookups that asked it against those that did not.
        lines = s.wait_access_log(640)
    lookups = [l for l in lines if l.get("cache_lookup_ms") not in (None, "", "-")]
    asked_ms = sorted(int(l["cache_lookup_ms"]) for l in lookups if l.get("cache_verified") not in (None, "", "-"))
    other_ms = sorted(int(l["cache_lookup_ms"]) for l in lookups if l.get("cache_verified") in (None, "", "-"))
    median = lambda xs: xs[len(xs) // 2] if xs else None
    print(f"\nsemantic cache with an ideal verifier, reporting half: {result}; verifier asked {len(asked)} times, "
          f"{served:.0f} same, {refused:.0f} different; lookup ms median {median(asked_ms)} with the verifier "
          f"({len(asked_ms)} lookups), {median(other_ms)} without ({len(other_ms)})")
    assert result["precision"] >= 0.98, result["wrong_examples"]
    assert result["recall"] >= 0.6, result
    assert served >= 30 and refused >= 30
    # Each call is about one pair: the new prompt and one stored question (the mock keeps the last 200).
    assert all(len(json.loads(r["body"])["documents"]) == 1 for r in asked)


@pytest.fixture(scope="module")
def verifier_stack(embedder_stack):
    with Stack(configs={CACHE: {"namespace": "global", "verify": VERIFIER}}, modules=[CACHE],
               embedder_from=embedder_stack) as s:
        yield s


def rerank_calls(stack):
    return [r for r in requests.get(stack.mock("/mock/requests"), timeout=10).json() if r["path"] == "/rerank"]


def test_a_verdict_is_kept_per_pair(verifier_stack):
    s = verifier_stack
    ask(s, "How do I reset my password?", "reset-answer")
    wait_until(lambda: s.redis("KEYS", "sluice:cache:*:x:*") or None, "stored")
    before = len(rerank_calls(s))
    paraphrase = "How do I recover my account password?"
    first = ask(s, paraphrase)
    assert (first.headers["x-sluice-cache"], first.headers.get("x-sluice-cache-verified")) == ("hit", "same")
    assert first.json()["choices"][0]["message"]["content"] == "reset-answer"
    line = wait_until(lambda: next((l for l in s.access_log() if l.get("cache_verified") == "same"), None), "log line")
    assert line["cache"] == "hit" and line["cache_reason"] == "semantic"
    assert len(rerank_calls(s)) == before + 1
    # Verdicts are kept per worker: at most one more call per other worker, however often asked.
    for _ in range(8):
        again = ask(s, paraphrase)
        assert (again.headers["x-sluice-cache"], again.headers.get("x-sluice-cache-verified")) == ("hit", "same")
    assert len(rerank_calls(s)) <= before + s.concurrency
    assert s.metric("sluice_cache_verify_total", decision="same", source="memo") >= 8 + 1 - s.concurrency


@pytest.mark.parametrize("trouble", ["verifier-fails", "verifier-slow", "verifier-garbage"])
def test_a_verifier_that_fails_leaves_the_guards_miss(verifier_stack, trouble):
    s = verifier_stack
    ask(s, f"How do I reset my router {trouble}?", "router-answer")
    wait_until(lambda: len(s.redis("KEYS", "sluice:cache:*:x:*").split()) >= 1 or None, "stored")
    before = s.metric("sluice_cache_verify_total", decision="none")
    for _ in range(2):
        response = ask(s, f"How do I quickly reset my home router {trouble}?")
        assert response.status_code == 200
        assert response.headers["x-sluice-cache"] == "miss"
        assert response.json()["choices"][0]["message"]["content"] != "router-answer"
    # Failures are not kept: each request asks again.
    assert s.metric("sluice_cache_verify_total", decision="none") == before + 2
    assert s.vm_failures() == []


def test_a_chat_verifier_is_asked_yes_or_no(embedder_stack):
    chat = {"kind": "chat", "cluster": "provider_openai", "authority": "mock", "model": "judge-1",
            "path": "/verifier/v1/chat/completions", "timeout_ms": 2000}
    with Stack(configs={CACHE: {"namespace": "global", "verify": chat}}, modules=[CACHE],
               embedder_from=embedder_stack) as s:
        ask(s, "How do I reset my password?", "reset-answer")
        ask(s, "How do I reset my router verifier-rambles?", "router-answer")
        wait_until(lambda: len(s.redis("KEYS", "sluice:cache:*:x:*").split()) == 2 or None, "stored")
        paraphrase = ask(s, "How do I recover my account password?")
        assert (paraphrase.headers["x-sluice-cache"], paraphrase.headers.get("x-sluice-cache-verified")) == ("hit", "same")
        # A near miss of the same words, which the guard is unsure about: the model says no.
        near = ask(s, "How do I change my password?")
        assert near.headers["x-sluice-cache"] == "miss"
        assert ask(s, "How do I quickly reset my home router verifier-rambles?").headers["x-sluice-cache"] == "miss"
        calls = [json.loads(r["body"]) for r in requests.get(s.mock("/mock/requests"), timeout=10).json()
                 if r["path"] == "/verifier/v1/chat/completions"]
        assert s.metric("sluice_cache_verify_total", decision="same") == 1
        assert s.metric("sluice_cache_verify_total", decision="different") == 1
        assert s.metric("sluice_cache_verify_total", decision="none") == 1
    assert len(calls) == 3
    assert all(c["model"] == "judge-1" and c["temperature"] == 0 and c["max_tokens"] == 1 for c in calls)
    assert calls[0]["messages"][1]["content"] == ("Question A: How do I recover my account password?\n"
                                                  "Question B: How do I reset my password?")
