"""The reference embedding service (tests/embedder: all-MiniLM-L6-v2 in Rust) over OpenAI's
embeddings API.

Its similarities must equal the ones sentence-transformers publishes for this model, so the
semantic cache's quality figures are the real model's, not a stand-in's; and its vectors must
equal the numpy oracle's (harness/minilm.py) on every kind of text, batched or not."""

import base64
import concurrent.futures
import math
import struct

import pytest
import requests

from harness.minilm import MiniLM, model_dir
from harness.stack import start_embedder


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    proc, port = start_embedder(tmp_path_factory.mktemp("embedder"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def embed(url, inputs, **extra):
    r = requests.post(f"{url}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": inputs, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def vectors(answer):
    return [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_similarities_equal_the_published_ones(embedder):
    # sentence-transformers' documented scores for all-MiniLM-L6-v2.
    pairs = [("The cat sits outside", "The dog plays in the garden", 0.2838),
             ("A man is playing guitar", "A woman watches TV", -0.0327),
             ("The new movie is awesome", "The new movie is so great", 0.8939)]
    answer = embed(embedder, [t for a, b, _ in pairs for t in (a, b)])
    found = vectors(answer)
    assert all(len(v) == 384 for v in found)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in found)
    for i, (_, _, expected) in enumerate(pairs):
        assert cosine(found[2 * i], found[2 * i + 1]) == pytest.approx(expected, abs=1e-3)
    assert answer["usage"]["prompt_tokens"] > 0 and answer["object"] == "list"


# Short and long (past the 256-token window), empty, accents, CJK, emoji, a lone character:
# lengths differ, so one batch pads most of them.
TEXTS = ["What is the capital of France?", "", "x", "héllo wörld, ça va ?", "日本語の文章を埋め込む", "🎉🎉 party",
         "Explain quantum computing with an example about cats and boxes. " * 40,
         "  leading and trailing spaces  ", "UPPER case Mixed"]


def test_vectors_equal_the_numpy_oracle_alone_and_batched(embedder):
    oracle = MiniLM(model_dir())
    expected = [oracle.embed_one(t) for t in TEXTS]
    batched = embed(embedder, TEXTS)
    for text, (vector, tokens), got in zip(TEXTS, expected, vectors(batched)):
        assert max(abs(a - b) for a, b in zip(vector, got)) < 1e-4, text
        alone = embed(embedder, text)
        assert vectors(alone)[0] == pytest.approx(got, abs=1e-5), text
        assert alone["usage"]["prompt_tokens"] == tokens, text
    assert batched["usage"]["prompt_tokens"] == sum(n for _, n in expected)


def test_concurrent_callers_each_get_their_own_vectors(embedder):
    # Requests that arrive together share a forward pass; each must get its own answer back.
    texts = [f"Question {i}: how do I reset my password?" * (1 + i % 3) for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda t: vectors(embed(embedder, t))[0], texts))
    alone = vectors(embed(embedder, texts))
    for got, expected in zip(answers, alone):
        assert got == pytest.approx(expected, abs=1e-5)


def test_base64_encoding_carries_the_same_floats(embedder):
    text = "What is the capital of France?"
    floats = vectors(embed(embedder, text))[0]
    packed = base64.b64decode(vectors(embed(embedder, text, encoding_format="base64"))[0])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(floats, abs=1e-7)


def test_bad_requests_get_openai_errors(embedder):
    for bad in [{"input": 3}, {"input": []}, {"nothing": True}, {"input": ["ok", 4]}, {"input": [[1, 2]]},
                {"input": "x", "encoding_format": "int8"}, [1, 2]]:
        r = requests.post(f"{embedder}/v1/embeddings", json=bad, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (bad, r.text)
    for body in [b"{not json", b"\xff\xfe", b""]:
        assert requests.post(f"{embedder}/v1/embeddings", data=body, timeout=10).status_code == 400
    huge = b'{"input": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    assert requests.post(f"{embedder}/v1/embeddings", data=huge, timeout=30).status_code == 413
    assert requests.get(f"{embedder}/v1/embeddings", timeout=10).status_code == 404
    assert requests.post(f"{embedder}/v1/other", json={"input": "x"}, timeout=10).status_code == 404
    # Still serving after all of that.
    assert len(vectors(embed(embedder, "still here"))[0]) == 384
