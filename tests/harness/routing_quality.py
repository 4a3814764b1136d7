"""How well semantic routes (the model rewriter's `intents`) tell six task kinds apart on
tests/data/routing_prompts.json (324 prompts: classification, summarisation, code, reasoning,
chitchat, extraction; nine groups of six per kind, each group whole in one half). An intent's
examples are the tuning half's prompts of its kind; a prompt's intent is the kind of its nearest
example (`intent_match: nearest`) or nearest centroid (`centroid`: the unit mean of a kind's
examples), by all-MiniLM-L6-v2's cosine as the rewriter computes it, if that reaches the
threshold.

The threshold is chosen on the tuning half, each prompt scored against the examples of the
*other* groups (leave one group out, so no prompt meets itself or its siblings); the reporting
half is scored against every tuning example and is for the figures. Below the threshold a
prompt goes to the next rule, here the cheap tier. End to end through Envoy, with today's
complexity heuristic beside it: tests/quality/test_routing_quality.py.

Run: python -m harness.routing_quality
"""

import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "tests" / "data" / "routing_prompts.json"
DATA = json.loads(PROMPTS.read_text())
KINDS = ["classification", "summarisation", "code", "reasoning", "chitchat", "extraction"]
# The tier each kind needs; a prompt no intent claims goes to `FALLBACK_TIER`.
TIER = {kind: tier for tier, kinds in DATA["tiers"].items() for kind in kinds}
FALLBACK_TIER = "cheap"
THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def prompts(half=None):
    return [p for p in DATA["prompts"] if half in (None, p["half"])]


def intents(threshold):
    """The rewriter's `intents`: one per kind, its examples the tuning half's prompts."""
    return [{"name": kind, "examples": [p["text"] for p in prompts("tuning") if p["kind"] == kind],
             "threshold": threshold} for kind in KINDS]


def tier_of(kind):
    return TIER.get(kind, FALLBACK_TIER)


def figures(decisions):
    """decisions: (true kind, decided kind or None) per prompt -> accuracy per kind, overall,
    tier accuracy (None goes to the fallback tier) and the share no intent claimed."""
    by_kind = defaultdict(list)
    for truth, decided in decisions:
        by_kind[truth].append(decided == truth)
    return {
        "per_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "accuracy": sum(t == d for t, d in decisions) / len(decisions),
        "tier": sum(tier_of(t) == tier_of(d) for t, d in decisions) / len(decisions),
        "unclaimed": sum(d is None for _, d in decisions) / len(decisions),
    }


def nearest(vector, examples, match, skip_group=None):
    """(kind, cosine) of the closest example or centroid; examples: (vector, kind, group)."""
    import numpy as np

    kept = [(v, kind) for v, kind, group in examples if group != skip_group]
    if match == "centroid":
        sums = defaultdict(lambda: 0)
        for v, kind in kept:
            sums[kind] = sums[kind] + v
        kept = [(s / max(np.linalg.norm(s), 1e-12), kind) for kind, s in sums.items()]
    best = max(((float(vector @ v), kind) for v, kind in kept), default=(0.0, None))
    return best[1], best[0]


def decided(scored, threshold):
    return [(truth, kind if score >= threshold else None) for truth, kind, score in scored]


def chosen(scored):
    """The tuning half's threshold: the highest with the best accuracy."""
    return max(THRESHOLDS, key=lambda t: (round(figures(decided(scored, t))["accuracy"], 6), t))


def main():
    from .minilm import MiniLM, model_dir

    model = MiniLM(model_dir())
    tuning, reporting = prompts("tuning"), prompts("reporting")
    vectors, _ = model.embed([p["text"] for p in tuning + reporting])
    examples = [(v, p["kind"], p["group"]) for v, p in zip(vectors, tuning)]
    for match in ["nearest", "centroid"]:
        halves = {
            "tuning (leave one group out)":
                [(p["kind"], *nearest(v, examples, match, p["group"])) for v, p in zip(vectors, tuning)],
            "reporting": [(p["kind"], *nearest(v, examples, match)) for v, p in zip(vectors[len(tuning):], reporting)],
        }
        for half, scored in halves.items():
            print(f"\nintent_match: {match}, {half} half: {len(scored)} prompts")
            print("| threshold | accuracy | tier accuracy | unclaimed | " + " | ".join(KINDS) + " |")
            print("|---" * (4 + len(KINDS)) + "|")
            for threshold in THRESHOLDS:
                f = figures(decided(scored, threshold))
                print(f"| {threshold:.2f} | {f['accuracy']:.3f} | {f['tier']:.3f} | {f['unclaimed']:.3f} | "
                      + " | ".join(f"{f['per_kind'][k]:.2f}" for k in KINDS) + " |")
        print(f"\nintent_match: {match}: the tuning half chooses {chosen(next(iter(halves.values()))):.2f}")


if __name__ == "__main__":
    main()
