"""Hit quality of cosine similarity, alone and with a lexical guard, on the labelled pairs in tests/data/semantic_pairs.json
(40 questions, each with 5 paraphrases that should hit and 5 near misses that must not).

Each pair counts at a threshold when its cosine (all-MiniLM-L6-v2, tests/harness/minilm.py) is
at or above it: recall over the paraphrases, precision over everything that would hit.

Run: python -m harness.pair_quality
"""

import json
import re
from pathlib import Path

from .minilm import MiniLM, model_dir

PAIRS = Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json"


def labelled_pairs():
    """(question, other, is_paraphrase, what differs) for every pair."""
    for group in json.loads(PAIRS.read_text()):
        for text in group["paraphrases"]:
            yield group["question"], text, True, None
        for miss in group["near_misses"]:
            yield group["question"], miss["text"], False, miss["differs"]


# A prototype of the lexical guard the cache will need (cosine alone cannot tell "capital of
# France" from "capital of Germany"): both prompts must have the same content words, modulo
# stop words, question framing and inflection, and the same conversion target.
STOP = set("""a an the is are was were be been being do does did doing i me my mine you your yours we our us it its
this that these those there of in on at to for from by with about into onto as and or if so than then too very
just also please tell give show let know can could should would will what which whats""".split())
FRAME = set("""name explain describe calculate compute find want need way ways steps step process command example
using use used get equal equals exactly really typical common best good instructions how""".split())
WH = {"when", "where", "who", "whom", "why"}
NEG = {"not", "no", "never", "without", "cannot", "can't", "don't", "doesn't", "isn't", "won't", "shouldn't"}


def lemma(word):
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
            return word[:-len(suffix)]
    return word


def content_words(text):
    text = text.lower().replace("%", " percent ").replace("\u2019", "'").replace("what's", "what is")
    out = []
    for w in re.findall(r"[a-z0-9]+(?:\.[0-9]+)?(?:'[a-z]+)?", text):
        w = w.removesuffix("'s")
        if w in NEG:
            out.append("NOT")
        elif w in WH:
            out.append(w)
        elif w not in STOP and w not in FRAME:
            out.append(lemma(w))
    return out


def targets(text):
    """The first content word after each "to", "into" or "in": a conversion's target."""
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    out = set()
    for i, w in enumerate(tokens):
        if w in ("to", "into", "in"):
            rest = [x for x in tokens[i + 1:] if x not in STOP and x not in FRAME]
            if rest:
                out.add(lemma(rest[0]))
    return out


def same_content(a, b):
    if set(content_words(a)) != set(content_words(b)):
        return False
    ta, tb = targets(a), targets(b)
    return not (ta and tb and ta != tb)


def table(scored, positives, title):
    print(title)
    print("| threshold | recall | precision |")
    print("|---|---|---|")
    for threshold in [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96]:
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

    pairs = list(labelled_pairs())
    scored = [(float(embed(a) @ embed(b)), same) for a, b, same, _ in pairs]
    positives = sum(1 for _, same in scored if same)
    print(f"{positives} paraphrase pairs, {len(scored) - positives} near-miss pairs")
    table(scored, positives, "cosine alone:")
    guarded = [(score if same_content(a, b) else -1.0, same) for (score, same), (a, b, _, _) in zip(scored, pairs)]
    table(guarded, positives, "cosine and the same content words:")


if __name__ == "__main__":
    main()
