"""Hit quality of the semantic cache on the project's labelled pairs (tests/data/semantic_pairs.json),
end to end: the real module in Envoy, the reference embedding service, Redis, default threshold.

Each group's question is asked once (its answer stored); then every paraphrase and near miss is
asked with `Cache-Control: no-store`, so that only the questions are ever cached. A hit is right
when it is a paraphrase answered with its own group's answer; every other hit is wrong. All 40
groups share one scope, so a hit on another group's question counts against precision too.
"""

import json
from pathlib import Path

import pytest
import requests

from harness.procs import wait_until
from harness.stack import Stack, running

PAIRS = Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json"


def measure(stack):
    groups = json.loads(PAIRS.read_text())

    def ask(text, answer=None):
        headers = {"x-mock-text": answer} if answer else {"cache-control": "no-store"}
        return requests.post(stack.url("/v1/chat/completions"), timeout=30, headers=headers,
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})

    for i, group in enumerate(groups):
        assert ask(group["question"], f"group-{i}").headers["x-sluice-cache"] == "miss"
    wait_until(lambda: len(stack.redis("KEYS", "sluice:cache:*:x:*").split()) == len(groups) or None, "stored")
    right = wrong = paraphrases = near_misses = 0
    wrong_examples = []
    for i, group in enumerate(groups):
        asked = [(p, True) for p in group["paraphrases"]] + [(m["text"], False) for m in group["near_misses"]]
        for text, is_paraphrase in asked:
            paraphrases += is_paraphrase
            near_misses += not is_paraphrase
            response = ask(text)
            assert response.status_code == 200
            if response.headers["x-sluice-cache"] != "hit":
                continue
            answer = response.json()["choices"][0]["message"]["content"]
            if is_paraphrase and answer == f"group-{i}":
                right += 1
            else:
                wrong += 1
                wrong_examples.append(f"{text!r} answered as {answer}")
    hits = right + wrong
    return {
        "paraphrases": paraphrases, "near_misses": near_misses, "hits": hits, "wrong": wrong,
        "precision": right / hits if hits else 1.0, "recall": right / paraphrases, "wrong_examples": wrong_examples,
    }


@pytest.fixture(scope="module")
def embedder_stack():
    yield from running(configs={"sluice.semantic_cache": {"namespace": "global"}}, modules=["sluice.semantic_cache"],
                       with_embedder=True)


def test_default_threshold_with_the_guard_reaches_the_precision_target(embedder_stack):
    result = measure(embedder_stack)
    print(f"\nsemantic cache, threshold 0.85, guard on: {result}")
    assert result["paraphrases"] >= 200 and result["near_misses"] >= 200
    assert result["precision"] >= 0.98, result["wrong_examples"]
    # The guard trades recall for precision; this is the measured floor, not a target.
    assert result["recall"] >= 0.15, result


def test_without_the_guard_precision_falls_short(embedder_stack):
    with Stack(configs={"sluice.semantic_cache": {"namespace": "global", "guard": False}},
               modules=["sluice.semantic_cache"], embedder_from=embedder_stack) as s:
        result = measure(s)
    print(f"\nsemantic cache, threshold 0.85, guard off: {result | {'wrong_examples': len(result['wrong_examples'])}}")
    assert result["precision"] < 0.98 and result["recall"] > 0.5, result
