"""How the guard's similarity check (`kind: similarity`) separates prompt injections from benign
prompts on tests/data/injection_prompts.json (207 injections, 205 benign, in a tuning and a
reporting half, each group whole in one half): the highest cosine (all-MiniLM-L6-v2) between a
prompt and the module's built-in attack examples (plugins/guard/src/attacks.txt), at a range of
thresholds, per half. The threshold is chosen on the tuning half; the reporting half is for the
figures. End to end through Envoy: tests/quality/test_injection_quality.py.

Run: python -m harness.injection_quality
"""

import json
import tempfile
import urllib.request
from pathlib import Path

from .stack import start_embedder

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "tests" / "data" / "injection_prompts.json"
ATTACKS = ROOT / "plugins" / "guard" / "src" / "attacks.txt"


def prompts(half=None):
    return [p for p in json.loads(PROMPTS.read_text())["prompts"] if half in (None, p["half"])]


def attacks():
    return [line.strip() for line in ATTACKS.read_text().splitlines() if line.strip() and not line.startswith("#")]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


class Embedder:
    """The reference embedding service (tests/embedder), started for the measurement."""

    def __init__(self):
        self.proc, self.port = start_embedder(Path(tempfile.mkdtemp(prefix="sluice-injection-")))

    def embed(self, texts):
        out = []
        for i in range(0, len(texts), 32):
            body = json.dumps({"input": texts[i:i + 32]}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/embeddings", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as r:
                out += [d["embedding"] for d in json.loads(r.read())["data"]]
        return out

    def stop(self):
        self.proc.stop()


def scores(model, items):
    reference = model.embed(attacks())
    vectors = model.embed([p["text"] for p in items])
    return [(max(cosine(v, r) for r in reference), p["label"] == "injection") for v, p in zip(vectors, items)]


def figures(scored, threshold):
    tp = sum(1 for s, bad in scored if bad and s >= threshold)
    fp = sum(1 for s, bad in scored if not bad and s >= threshold)
    positives = sum(1 for _, bad in scored if bad)
    return {"recall": tp / max(positives, 1), "precision": tp / max(tp + fp, 1), "flagged": tp + fp}


def main():
    model = Embedder()
    for half in ["tuning", "reporting"]:
        scored = scores(model, prompts(half))
        print(f"{half} half ({len(scored)} prompts)")
        print("| threshold | recall | precision |")
        print("|---|---|---|")
        for threshold in [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]:
            f = figures(scored, threshold)
            print(f"| {threshold:.2f} | {f['recall']:.3f} | {f['precision']:.3f} |")
    model.stop()


if __name__ == "__main__":
    main()
