"""What guard services cost a request, in real Envoy on loopback (part of `make bench`; alone:
`python -m harness.guard_cost`).

Four gateways, one after the other, each in front of the mock provider with its scripted
moderation service: plain Envoy; the guard filters with moderation on the prompt; moderation on
the answer with `holdback` streams; the same with `cut` streams. Measured:
- a JSON chat request's latency (median of sequential requests) and what the moderation check
  adds over plain Envoy, next to the moderation service's own median time (called directly);
- a streamed answer paced like a model (a 10-character event every 20 ms, 40 events): time to
  first token, the median gap between content chunks, and the time to the last byte.
"""

import argparse
import json
import statistics
import time
import urllib.parse
import urllib.request

import requests

from .stack import DEMO_KEY, Stack

REQUESTS = 60
STREAMS = 12
PIECE, EVENTS, DELAY_MS = 10, 40, 20
MODERATION = {"name": "mod", "kind": "moderation", "cluster": "guard_services", "authority": "guards",
              "timeout_ms": 2000, "default_action": "block"}


def configs(direction, mode="holdback"):
    guard = {**MODERATION, "check": [direction]}
    name = "sluice.guard" if direction == "prompt" else "sluice.guard_answers"
    return {name: {"guards": [guard], "stream": {"mode": mode}}}


GATEWAYS = {
    "plain": {"modules": []},
    "prompt": {"modules": ["sluice.guard", "sluice.guard_answers"], "configs": configs("prompt")},
    "holdback": {"modules": ["sluice.guard", "sluice.guard_answers"], "configs": configs("answer")},
    "cut": {"modules": ["sluice.guard", "sluice.guard_answers"], "configs": configs("answer", "cut")},
}


def chat(stream=False):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "stream": stream}


def json_latency_ms(stack) -> float:
    session = requests.Session()
    url, headers = stack.url("/v1/chat/completions"), {"authorization": f"Bearer {DEMO_KEY}"}
    times = []
    for i in range(REQUESTS + 5):
        started = time.perf_counter()
        r = session.post(url, json=chat(), headers=headers, timeout=30)
        r.raise_for_status()
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def stream_timings(stack) -> dict:
    text = " ".join(["Sentence number one is here."] * 14)[:PIECE * EVENTS]
    headers = {"authorization": f"Bearer {DEMO_KEY}", "x-mock-text": urllib.parse.quote(text),
               "x-mock-piece-chars": str(PIECE), "x-mock-chunk-bytes": "160", "x-mock-chunk-delay-ms": str(DELAY_MS)}
    ttft, gaps, totals = [], [], []
    for _ in range(STREAMS):
        started = time.perf_counter()
        r = requests.post(stack.url("/v1/chat/completions"), json=chat(True), headers=headers, stream=True, timeout=60)
        r.raise_for_status()
        seen, last = [], None
        for line in r.iter_lines():
            if line.startswith(b"data: {") and content(line):
                now = time.perf_counter()
                seen.append(now)
                last = now
        totals.append(((last or time.perf_counter()) - started) * 1000)
        if seen:
            ttft.append((seen[0] - started) * 1000)
            gaps += [(b - a) * 1000 for a, b in zip(seen, seen[1:])]
    return {"ttft_ms": round(statistics.median(ttft), 1) if ttft else None,
            "chunk_gap_p50_ms": round(statistics.median(gaps), 1) if gaps else None,
            "last_byte_ms": round(statistics.median(totals), 1)}


def content(line: bytes) -> str:
    event = json.loads(line[6:])
    return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])


def moderation_ms(stack) -> float:
    times = []
    for _ in range(REQUESTS):
        body = json.dumps({"input": ["What is the capital of France?"]}).encode()
        request = urllib.request.Request(stack.mock("/v1/moderations"), data=body,
                                         headers={"content-type": "application/json"})
        started = time.perf_counter()
        urllib.request.urlopen(request, timeout=10).read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure() -> dict:
    out = {}
    for name, arguments in GATEWAYS.items():
        with Stack(concurrency=1, **arguments) as stack:
            row = {"json_p50_ms": round(json_latency_ms(stack), 2), **stream_timings(stack)}
            if name == "plain":
                row["moderation_service_p50_ms"] = round(moderation_ms(stack), 2)
            out[name] = row
    plain = out["plain"]
    out["prompt"]["added_json_p50_ms"] = round(out["prompt"]["json_p50_ms"] - plain["json_p50_ms"], 2)
    for mode in ("holdback", "cut"):
        row = out[mode]
        row["added_ttft_ms"] = round(row["ttft_ms"] - plain["ttft_ms"], 1) if row["ttft_ms"] and plain["ttft_ms"] else None
        row["added_last_byte_ms"] = round(row["last_byte_ms"] - plain["last_byte_ms"], 1)
    out["stream_shape"] = {"piece_chars": PIECE, "events": EVENTS, "delay_ms": DELAY_MS}
    return out


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
