"""Hit quality of cosine similarity alone on the labelled pairs in tests/data/semantic_pairs.json
(100 questions, each with 5 paraphrases that should hit and 5 near misses that must not, in a
tuning and a reporting half), at a range of thresholds: why the cache needs its guard.

Each pair counts at a threshold when its cosine (all-MiniLM-L6-v2, tests/harness/minilm.py) is
at or above it: recall over the paraphrases, precision over everything that would hit. The
guard's own figures, end to end, come from tests/quality/test_cache_quality.py, and without
embeddings from `cargo test -p sluice-semantic-cache --test labelled_pairs -- --nocapture`.

Run: python -m harness.pair_quality
"""

import json
from pathlib import Path

from .minilm import MiniLM, model_dir

PAIRS = Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json"


def labelled_pairs(half=None):
    """(question, other, is_paraphrase, what differs) for every pair of a half (or both)."""
    for group in json.loads(PAIRS.read_text()):
        if half and group["half"] != half:
            continue
        for text in group["paraphrases"]:
            yield group["question"], text, True, None
        for miss in group["near_misses"]:
            yield group["question"], miss["text"], False, miss["differs"]


def table(scored, positives, title):
    print(title)
    print("| threshold | recall | precision |")
    print("|---|---|---|")
    for threshold in [0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96]:
        hits = [same for score, same in scored if score >= threshold]
        tp = sum(hits)
        print(f"| {threshold:.2f} | {tp / positives:.3f} | {tp / max(len(hits), 1):.3f} |")


def main():
    model = MiniLM(model_dir())
    vectors = {}

    def embed(text):
        if text not in vectors:
            vectors[text] = model.embed_one(text)[0]
        return vectors[text]

    for half in ["tuning", "reporting"]:
        pairs = list(labelled_pairs(half))
        scored = [(float(embed(a) @ embed(b)), same) for a, b, same, _ in pairs]
        positives = sum(1 for _, same in scored if same)
        table(scored, positives, f"cosine alone, {half} half ({positives} paraphrases, {len(scored) - positives} near misses):")


if __name__ == "__main__":
    main()
