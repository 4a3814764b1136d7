"""Hit quality of plain cosine similarity on the labelled pairs in tests/data/semantic_pairs.json
(40 questions, each with 5 paraphrases that should hit and 5 near misses that must not).

Each pair counts at a threshold when its cosine (all-MiniLM-L6-v2, tests/harness/embedder.py) is
at or above it: recall over the paraphrases, precision over everything that would hit.

Run: python -m harness.pair_quality
"""

import json
from pathlib import Path

from .embedder import MiniLM, model_dir

PAIRS = Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json"


def labelled_pairs():
    """(question, other, is_paraphrase, what differs) for every pair."""
    for group in json.loads(PAIRS.read_text()):
        for text in group["paraphrases"]:
            yield group["question"], text, True, None
        for miss in group["near_misses"]:
            yield group["question"], miss["text"], False, miss["differs"]


def main():
    model = MiniLM(model_dir())
    vectors = {}

    def embed(text):
        if text not in vectors:
            vectors[text] = model.embed_one(text)[0]
        return vectors[text]

    scored = [(float(embed(a) @ embed(b)), same) for a, b, same, _ in labelled_pairs()]
    positives = sum(1 for _, same in scored if same)
    print(f"{positives} paraphrase pairs, {len(scored) - positives} near-miss pairs")
    print("| threshold | recall | precision |")
    print("|---|---|---|")
    for threshold in [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98]:
        hits = [same for score, same in scored if score >= threshold]
        tp = sum(hits)
        print(f"| {threshold:.2f} | {tp / positives:.3f} | {tp / max(len(hits), 1):.3f} |")


if __name__ == "__main__":
    main()
