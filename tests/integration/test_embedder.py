"""The reference embedding service (all-MiniLM-L6-v2 in numpy) over OpenAI's embeddings API.

Its similarities must equal the ones sentence-transformers publishes for this model, so the
semantic cache's quality figures are the real model's, not a stand-in's."""

import math

import pytest
import requests

from harness.stack import start_service


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    proc, port = start_service("embedder", tmp_path_factory.mktemp("embedder"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def embed(url, inputs):
    r = requests.post(f"{url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_similarities_equal_the_published_ones(embedder):
    # sentence-transformers' documented scores for all-MiniLM-L6-v2.
    pairs = [("The cat sits outside", "The dog plays in the garden", 0.2838),
             ("A man is playing guitar", "A woman watches TV", -0.0327),
             ("The new movie is awesome", "The new movie is so great", 0.8939)]
    answer = embed(embedder, [t for a, b, _ in pairs for t in (a, b)])
    vectors = [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    for i, (_, _, expected) in enumerate(pairs):
        assert cosine(vectors[2 * i], vectors[2 * i + 1]) == pytest.approx(expected, abs=1e-3)
    assert answer["usage"]["prompt_tokens"] > 0 and answer["object"] == "list"


def test_single_input_and_bad_requests(embedder):
    one = embed(embedder, "What is the capital of France?")
    assert len(one["data"]) == 1
    for bad in [{"input": 3}, {"input": []}, {"nothing": True}]:
        assert requests.post(f"{embedder}/v1/embeddings", json=bad, timeout=10).status_code == 400
    assert requests.post(f"{embedder}/v1/embeddings", data=b"{not json", timeout=10).status_code == 400
