"""How the semantic cache's Lua search costs grow with the entries in a scope, measured in a real
Redis: the module's own scripts (read from plugins/semantic-cache/src/scripts.rs) store N entries
in one scope, then the search runs repeatedly. The entries are real all-MiniLM-L6-v2 embeddings of
the labelled prompts (tests/data/semantic_pairs.json; past 440, the same ones again with a little
noise), quantised and signed as the module does; the queries are other labelled prompts. Redis's
`INFO commandstats` gives the server time per call, which is what one lookup blocks Redis for.

Run: python -m harness.cache_scan  (also part of `make bench`)
"""

import json
import random
import re
import socket
import subprocess
import tempfile
from pathlib import Path

from .procs import Proc, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "plugins/semantic-cache/src/scripts.rs"
DIMENSIONS = 384
CAPACITY = 256  # the default `bucket_capacity`


def lua(name):
    source = SCRIPTS.read_text()
    return re.search(rf'pub const {name}: &str = r#"(.*?)"#;', source, re.S).group(1)


class Redis:
    """A minimal RESP client: enough for EVAL and INFO."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = self.sock.makefile("rb")

    def call(self, *args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self.read()

    def read(self):
        line = self.reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def quantized(vector):
    norm = sum(x * x for x in vector) ** 0.5
    levels = [max(-127, min(127, round(x / norm * 127))) for x in vector]
    return bytes(level + 128 for level in levels), sum(level * level for level in levels) ** 0.5


MASK = (1 << 64) - 1
SEED = 0x5EED5A1CE0C0FFEE  # vector.rs HYPERPLANE_SEED
SIGNATURE_PLANES = 32  # vector.rs SIGNATURE_PLANES


def plane_sign(plane, j):
    """vector.rs `sign`: splitmix64 of the seed, the plane and the component."""
    z = SEED ^ (plane << 32) ^ j
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) & 1 == 1


PLANES = [[1.0 if plane_sign(SIGNATURE_PLANES + p, j) else -1.0 for j in range(DIMENSIONS)] for p in range(64)]


def signature(vector):
    """vector.rs `Embedding::signature`: bit p of byte p // 8 is the sign of plane p's dot product."""
    out = bytearray(8)
    for p, plane in enumerate(PLANES):
        if sum(a * b for a, b in zip(plane, vector)) >= 0:
            out[p // 8] |= 1 << (p % 8)
    return bytes(out)


def labelled_vectors():
    from .minilm import MiniLM, model_dir
    model = MiniLM(model_dir())
    groups = json.loads((ROOT / "tests/data/semantic_pairs.json").read_text())
    texts = [t for g in groups for t in [g["question"], *g["paraphrases"], *(m["text"] for m in g["near_misses"])]]
    return [[float(x) for x in model.embed_one(t)[0]] for t in texts]


MAX_BITS = 24  # vector::max_differing_bits(0.85)


def measure(sizes=(0, 16, 64, 256, 1024), calls=200):
    work = Path(tempfile.mkdtemp(prefix="sluice-scan-"))
    port = free_port()
    redis = Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                           "no", "--dir", str(work)], work / "redis.log")
    try:
        wait_until(lambda: "Ready to accept connections" in redis.log(), "redis", 20, redis)
        r = Redis(port)
        search, store = r.call("SCRIPT", "LOAD", lua("SEARCH")), r.call("SCRIPT", "LOAD", lua("STORE"))
        rng = random.Random(7)
        vectors = labelled_vectors()
        rng.shuffle(vectors)
        queries, pool = vectors[:20], vectors[20:]
        results = []
        stored = 0
        record = json.dumps({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 300},
                                                         "finish_reason": "stop"}]})
        for size in sizes:
            while stored < size:
                base = pool[stored % len(pool)]
                raw = base if stored < len(pool) else [x + rng.gauss(0, 0.01) for x in base]
                vector, norm = quantized(raw)
                ident = f"{stored:032x}"
                answer = f"sluice:cache:g:x:{ident}"
                r.call("EVALSHA", store, 6, answer, f"sluice:cache:g:e:{ident}", "sluice:cache:g:b:scope:0",
                       answer, answer, answer, record, 3600, "semantic", "", vector, f"{norm:.6f}",
                       f"question {stored}", signature(raw) + ident.encode(), CAPACITY, "", "", "", "")
                stored += 1
            asked = [(quantized(v)[0], signature(v)) for v in queries]
            for filtered, max_bits in [(True, MAX_BITS), (False, 64)]:
                r.call("CONFIG", "RESETSTAT")
                compared = 0
                for i in range(calls):
                    query, query_signature = asked[i % len(asked)]
                    reply = r.call("EVALSHA", search, 1, "sluice:cache:g:b:scope:0", query, query_signature, max_bits,
                                   0.85, 3, CAPACITY, "sluice:cache:g:e:")
                    compared += int(reply[1])
                stats = r.call("INFO", "commandstats")
                usec = float(re.search(r"cmdstat_evalsha:calls=\d+,usec=\d+,usec_per_call=([\d.]+)", stats).group(1))
                key = "redis_us_per_search" if filtered else "redis_us_without_signatures"
                results.append({"entries": size, "read": int(reply[0]), "compared": round(compared / calls), key: usec})
        # One row per scope size: the filtered search, and the cost had every entry been compared.
        merged = {}
        for row in results:
            merged.setdefault(row["entries"], {}).update({k: v for k, v in row.items() if k != "compared"})
            if "redis_us_per_search" in row:
                merged[row["entries"]]["compared"] = row["compared"]
        results = list(merged.values())
        return results
    finally:
        redis.stop()


def main():
    for row in measure():
        print(f"{row['entries']:5} entries in the scope: {row['read']:4} read, {row['compared']:4} compared in full, "
              f"{row['redis_us_per_search']:8.1f} us of Redis time per search "
              f"({row['redis_us_without_signatures']:.1f} us comparing every entry in full)")


if __name__ == "__main__":
    main()
