"""`make bench`: wrk on loopback against plain Envoy and Envoy with the Sluice modules, in one run.

The provider is a second Envoy answering with fixed bodies (`direct_response`), so the upstream is
never the bottleneck. Each scenario (JSON or SSE answer, short or ~8k-token prompt) is measured on
plain Envoy and on each module chain, one after the other: requests/s at saturation and p50/p99
latency at low load, reported as ratios to plain Envoy. Also: module size, VM start time and memory.
Results go to bench/results/latest.json (each variant keeps its last figures) and, through
harness/bench_report.py, to docs/benchmark-results.md.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from . import bench_report, cache_scan
from .paced import paced
from .procs import Proc, free_port, http_ok, wait_until
from .stack import DEFAULT_WASM_DIR, ROOT, Stack, envoy_binary, key_entry

SHORT_PROMPT = "What is the capital of France?"
# ~8k tokens of ordinary prose.
LONG_PROMPT = ("The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report. " * 420)

CHAT_JSON = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The capital of France is Paris."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
})


def chat_sse():
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    pieces = ["The ", "capital ", "of ", "France ", "is ", "Paris."]
    events = [{**base, "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


ANTHROPIC_JSON = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "The capital of France is Paris."}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 21, "output_tokens": 7},
})


def anthropic_sse():
    message = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
               "content": [], "stop_reason": None, "usage": {"input_tokens": 21, "output_tokens": 0}}
    events = [("message_start", {"type": "message_start", "message": message}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    for piece in ["The ", "capital ", "of ", "France ", "is ", "Paris."]:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 7}}),
               ("message_stop", {"type": "message_stop"})]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


GEMINI_MODEL, BEDROCK_MODEL = "gemini-2.5-flash", "anthropic.claude-haiku-4-5-20251001-v1:0"
GEMINI_USAGE = {"promptTokenCount": 21, "candidatesTokenCount": 7, "totalTokenCount": 28}
GEMINI_JSON = json.dumps({"candidates": [{"content": {"role": "model", "parts": [
    {"text": "The capital of France is Paris."}]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": GEMINI_USAGE, "modelVersion": GEMINI_MODEL, "responseId": "bench"})


def gemini_sse():
    pieces = ["The ", "capital ", "of ", "France ", "is ", "Paris."]
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
               "modelVersion": GEMINI_MODEL} for p in pieces]
    chunks[-1]["candidates"][0]["finishReason"] = "STOP"
    chunks[-1]["usageMetadata"] = GEMINI_USAGE
    return "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks)


BEDROCK_USAGE = {"inputTokens": 21, "outputTokens": 7, "totalTokens": 28}
BEDROCK_JSON = json.dumps({"output": {"message": {"role": "assistant", "content": [
    {"text": "The capital of France is Paris."}]}}, "stopReason": "end_turn", "usage": BEDROCK_USAGE})


def bedrock_stream() -> bytes:
    from .mock_provider import event_stream_message
    pieces = ["The ", "capital ", "of ", "France ", "is ", "Paris."]
    messages = [event_stream_message("messageStart", {"role": "assistant"})]
    messages += [event_stream_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}})
                 for p in pieces]
    messages += [event_stream_message("contentBlockStop", {"contentBlockIndex": 0}),
                 event_stream_message("messageStop", {"stopReason": "end_turn"}),
                 event_stream_message("metadata", {"usage": BEDROCK_USAGE, "metrics": {"latencyMs": 1}})]
    return b"".join(messages)


def upstream_config(port, admin_port):
    def route(path, body, content_type, headers=None):
        match = {"path": path}
        if headers:
            match["headers"] = [{"name": k, "string_match": {"exact": v}} for k, v in headers.items()]
        # Binary bodies (AWS event-stream) go base64-encoded.
        source = ({"inline_bytes": base64.b64encode(body).decode()} if isinstance(body, bytes)
                  else {"inline_string": body})
        return {"match": match,
                "direct_response": {"status": 200, "body": source},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": content_type},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "provider", "per_connection_buffer_limit_bytes": 33554432,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "provider",
                    "route_config": {"virtual_hosts": [{"name": "p", "domains": ["*"], "routes": [
                        route("/json/v1/chat/completions", CHAT_JSON, "application/json"),
                        route("/sse/v1/chat/completions", chat_sse(), "text/event-stream"),
                        # Behind the provider adapter the path is Anthropic's: the answer kind
                        # travels in a header.
                        route("/v1/messages", anthropic_sse(), "text/event-stream", {"x-bench-answer": "sse"}),
                        route("/v1/messages", ANTHROPIC_JSON, "application/json"),
                        route(f"/v1beta/models/{GEMINI_MODEL}:generateContent", GEMINI_JSON, "application/json"),
                        route(f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent", gemini_sse(), "text/event-stream"),
                        route("/model/" + BEDROCK_MODEL.replace(":", "%3A") + "/converse", BEDROCK_JSON,
                              "application/json"),
                        route("/model/" + BEDROCK_MODEL.replace(":", "%3A") + "/converse-stream", bedrock_stream(),
                              "application/vnd.amazon.eventstream"),
                    ]}]},
                    # The whole request is read before the direct response: an HTTP/1.1 answer
                    # sent before the request body ends closes the connection, and the gateway
                    # would then open one per request (real providers keep theirs open).
                    "http_filters": [
                        {"name": "envoy.filters.http.buffer", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                            "max_request_bytes": 33554432}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
        }]},
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("SLUICE_BENCH_KEY")
wrk.headers["x-bench-answer"] = os.getenv("SLUICE_BENCH_ANSWER")
if os.getenv("SLUICE_BENCH_CACHE_CONTROL") ~= "" then
  wrk.headers["cache-control"] = os.getenv("SLUICE_BENCH_CACHE_CONTROL")
end
for name, value in string.gmatch(os.getenv("SLUICE_BENCH_HEADERS") or "", "([^=;]+)=([^;]*)") do
  wrk.headers[name] = value
end
local f = io.open(os.getenv("SLUICE_BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""

BENCH_KEY = "sk-sluice-bench"
# The budget enforcer as a team would run it: a key, and request, token and USD limits high
# enough never to trip, so every request makes the full check-and-reserve round trip to Redis
# and is charged afterwards.
BENCH_BUDGET = {
    "keys": [key_entry(BENCH_KEY, "bench", team="bench", user="bench")],
    "limits": [
        {"name": "rpm", "scope": "key", "kind": "requests", "window": "minute", "limit": 10**12},
        {"name": "tokens", "scope": "team", "kind": "tokens", "window": "hour", "limit": 10**12},
        {"name": "usd", "scope": "user", "kind": "usd", "window": "month", "limit": 10**9},
    ],
}
# The model rewriter: the client's `gpt-4o` is a logical model, rewritten and re-routed to an
# OpenAI target (rewrite alone) or to an Anthropic target (rewrite, then translation both ways by
# the provider adapter).
BENCH_REWRITE = {"models": {"gpt-4o": {"targets": [
    {"provider": "openai", "model": "gpt-4o-2024-08-06", "cluster": "provider_openai"}]}}}
BENCH_TRANSLATE = {"models": {"gpt-4o": {"targets": [
    {"provider": "anthropic", "model": "claude-haiku-4-5", "cluster": "provider_anthropic"}]}}}
# The same request to a Gemini and to a Bedrock target (the model in the path; Bedrock's stream
# in AWS event-stream frames).
BENCH_GEMINI = {"models": {"gpt-4o": {"targets": [
    {"provider": "gemini", "model": GEMINI_MODEL, "cluster": "provider_gemini"}]}}}
BENCH_BEDROCK = {"models": {"gpt-4o": {"targets": [
    {"provider": "bedrock", "model": BEDROCK_MODEL, "cluster": "provider_bedrock"}]}}}
# The PII scrubber's prompts: ~2 KB and ~100 KB of prose with an email, a phone number and an IP
# address every ~1 KB (redacted on the way in; the answer is then checked for placeholders).
PII_PROMPTS = ["2k-pii", "100k-pii"]


def pii_prompts():
    paragraph = ("The committee reviewed the quarterly report and asked for the revised figures by Friday. "
                 "Please reach the account owner at jane.doe@example.com or +44 20 7946 0958; the service "
                 "runs on 10.20.30.40 behind the usual proxy. ") * 4
    return [("2k-pii", paragraph * 2 + paragraph[:250]), ("100k-pii", paragraph * 113)]


# The semantic cache, one tenant (no identity needed). `cache-exact` answers the short prompt from
# an exact entry; `cache-semantic` answers a paraphrase of it (exact miss, embedding, Lua search,
# guard); `cache-miss` looks up (exact, embedding, search), finds nothing and goes upstream
# (`Cache-Control: no-store`, so it stays a miss). The embedding service is the reference one
# (tests/embedder: all-MiniLM-L6-v2 in Rust on one core beside Redis) remembering the texts it
# has embedded (`--memo`): after the first call, an embedding costs the module its callout but no
# model time, so the figures are the module's. The model's own time per call is measured alone
# (`embedder_ms`); a deployment adds its embedding server's latency to each semantic lookup.
EMBEDDER = {"memo": 10_000}
BENCH_CACHE = {"namespace": "global"}
CACHE_PROMPTS = {"cache-exact": "short", "cache-semantic": "paraphrase", "cache-miss": "short",
                 "cache-exact-miss": "short"}
# `cache-exact-miss`: the same miss with `mode: exact` (one Redis `GET`, no embedding).
CACHE_CONFIGS = {"cache-exact-miss": {**BENCH_CACHE, "mode": "exact"}}
PARAPHRASE_PROMPT = "Tell me the capital city of France"

# Latency at a fixed rate (open loop, tests/harness/paced.py).
PACED_RATE = 1000


def parse_wrk(output):
    def latency_ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not m:
            return None
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"),
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


# The gateway gets core 0 to itself; wrk and the upstream share the other core(s), so the
# gateway's capacity is what throughput measures.
GATEWAY_CPUS = "0"
OTHER_CPUS = f"1-{os.cpu_count() - 1}" if (os.cpu_count() or 1) > 1 else "0"


def wrk(url, body_path, connections, seconds, script_path, cache_control="", headers=None):
    answer = "sse" if "/sse/" in url else "json"
    env = dict(os.environ, SLUICE_BENCH_BODY=str(body_path), SLUICE_BENCH_KEY=BENCH_KEY, SLUICE_BENCH_ANSWER=answer,
               SLUICE_BENCH_CACHE_CONTROL=cache_control,
               SLUICE_BENCH_HEADERS=";".join(f"{k}={v}" for k, v in (headers or {}).items()))
    out = subprocess.run(["taskset", "-c", OTHER_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script_path), url],
                         capture_output=True, text=True, env=env, timeout=seconds + 60, check=True).stdout
    return parse_wrk(out)


def paced_load(stack, path, body_path, seconds, cache_control=""):
    """Latency at PACED_RATE requests/s, the load generator on the non-gateway cores."""
    os.sched_setaffinity(0, {int(c) for c in range(int(OTHER_CPUS.split("-")[0]), (os.cpu_count() or 1))})
    try:
        answer = "sse" if "/sse/" in path else "json"
        headers = {"content-type": "application/json", "authorization": f"Bearer {BENCH_KEY}", "x-bench-answer": answer}
        if cache_control:
            headers["cache-control"] = cache_control
        return paced(("127.0.0.1"), stack.listen_port, path, Path(body_path).read_bytes(), headers,
                     rate=PACED_RATE, seconds=seconds)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def scrub_throughput():
    """The PII scrubber's scrub function alone, in MB/s, compiled to wasm and run in V8 (Node's
    WASI), as inside the module."""
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "sluice-pii-scrubber",
                    "--example", "scrub_throughput"], cwd=ROOT, check=True, timeout=900)
    program = ROOT / "target/wasm32-wasip1/release/examples/scrub_throughput.wasm"
    out = subprocess.run(["node", "--no-warnings", str(ROOT / "tests/harness/run_wasi.mjs"), str(program)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(.+?): ([\d.]+) MB/s", out, re.M)}


def guard_speed():
    """The semantic cache's paraphrase guard alone, in µs per comparison over the labelled pairs,
    compiled to wasm and run in V8 (Node's WASI), as inside the module."""
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "sluice-semantic-cache",
                    "--example", "guard_speed"], cwd=ROOT, check=True, timeout=900)
    program = ROOT / "target/wasm32-wasip1/release/examples/guard_speed.wasm"
    out = subprocess.run(["node", "--no-warnings", str(ROOT / "tests/harness/run_wasi.mjs"), str(program)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    found = re.search(r"guard: ([\d.]+) us per comparison", out)
    return float(found.group(1)) if found else None


def embedder_latency(stack, calls=40):
    """The reference embedding service alone, one call at a time, each a text it has not seen
    (so the model runs): p50 and p99 in ms."""
    url = f"http://127.0.0.1:{stack.embedder_port}/v1/embeddings"
    times = []
    for call in range(calls):
        body = json.dumps({"model": "all-MiniLM-L6-v2", "input": f"{PARAPHRASE_PROMPT} {call}"}).encode()
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as response:
            response.read()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50": round(times[len(times) // 2], 2), "p99": round(times[int(len(times) * 0.99)], 2)}


def prime_cache(stack, body_path):
    """Stores the short prompt's answer (JSON and stream answers share the entry)."""
    request = urllib.request.Request(stack.url("/json/v1/chat/completions"), data=Path(body_path).read_bytes(),
                                     headers={"content-type": "application/json", "x-bench-answer": "json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["x-sluice-cache"] == "miss", dict(response.headers)
    wait_until(lambda: stack.redis("KEYS", "sluice:cache:*:x:*") or None, "the primed cache entry", 10)


def start_upstream(work: Path) -> tuple:
    """The benchmark provider (`upstream_config`) on the cores the gateway does not use, ready;
    returns its process and port."""
    port, admin = free_port(), free_port()
    (work / "upstream.yaml").write_text(yaml.safe_dump(upstream_config(port, admin)))
    upstream = Proc("upstream", ["taskset", "-c", OTHER_CPUS, envoy_binary(), "-c", str(work / "upstream.yaml"),
                                 "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
                    work / "upstream.log")
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), "upstream envoy", 30, upstream)
    except Exception:
        upstream.stop()
        raise
    return upstream, port


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def rss_kb(pid):
    total = 0
    for p in [pid] + [int(c) for c in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--latency-connections", type=int, default=1)
    parser.add_argument("--throughput-connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per point; medians are reported")
    parser.add_argument("--only", default=None, help="one scenario, e.g. json/short")
    parser.add_argument("--variants", default=None, help="comma-separated variants to compare with plain Envoy "
                        "(the others keep their last figures in the results)")
    return parser.parse_args()


def write_bodies(work: Path) -> dict:
    """Each prompt's request body, by prompt name."""
    bodies = {}
    for name, prompt in [("short", SHORT_PROMPT), ("8k", LONG_PROMPT), ("paraphrase", PARAPHRASE_PROMPT),
                         *pii_prompts()]:
        path = work / f"{name}.json"
        path.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}))
        bodies[name] = path
    return bodies


def all_variants(wasm_dir: Path, work: Path) -> list:
    """(name, modules kept, module dir, rewriter config, prompts it is measured on)."""
    # The floor: a wasm filter that does nothing, in the token counter's slot.
    floor_dir = work / "floor-wasm"
    floor_dir.mkdir()
    (floor_dir / "sluice_token_counter.wasm").symlink_to(wasm_dir / "sluice_wasm_floor.wasm")
    base = ["short", "8k"]
    return [("plain", [], None, {}, [*base, "paraphrase", *PII_PROMPTS]),
            ("wasm-floor", ["sluice.token_counter"], floor_dir, {}, base),
            ("token-counter", ["sluice.token_counter"], wasm_dir, {}, base),
            ("budget-enforcer", ["sluice.budget_enforcer"], wasm_dir, {}, base),
            ("model-rewriter", ["sluice.model_rewriter"], wasm_dir, BENCH_REWRITE, base),
            ("translation", ["sluice.model_rewriter", "sluice.provider_adapter"], wasm_dir, BENCH_TRANSLATE, base),
            ("translation-gemini", ["sluice.model_rewriter", "sluice.provider_adapter"], wasm_dir, BENCH_GEMINI, base),
            ("translation-bedrock", ["sluice.model_rewriter", "sluice.provider_adapter"], wasm_dir, BENCH_BEDROCK,
             base),
            # The other side: clients of another schema (`CLIENT_REQUESTS`) to the OpenAI target.
            ("client-anthropic", ["sluice.model_rewriter", "sluice.provider_adapter"], wasm_dir, BENCH_REWRITE, base),
            ("client-gemini", ["sluice.model_rewriter", "sluice.provider_adapter"], wasm_dir, BENCH_REWRITE, base),
            ("pii-scrubber", ["sluice.pii_scrubber"], wasm_dir, {}, PII_PROMPTS),
            *[(name, ["sluice.semantic_cache"], wasm_dir, {}, [prompt]) for name, prompt in CACHE_PROMPTS.items()]]


# Cache lookups that call the embedding service are bounded by its capacity, not the gateway's:
# no fixed-rate run for those.
UNPACED = {"cache-semantic", "cache-miss"}
# No answer is stored during the runs: a miss stays a miss, and a paraphrase that missed (the
# embedding service too slow, say) cannot turn into an exact hit.
CACHE_CONTROL = {"cache-miss": "no-store", "cache-semantic": "no-store", "cache-exact-miss": "no-store"}


def start_variants(variants, work, upstream_port, bodies, stacks, extras):
    """One gateway per variant into `stacks`, all running at once; the cache variants share one
    embedding service (measured alone into `extras`) and have their entries primed."""
    embedder = None
    for variant, modules, module_dir, rewriter, _ in variants:
        caching = variant in CACHE_PROMPTS
        configs = {"sluice.budget_enforcer": BENCH_BUDGET, "sluice.model_rewriter": rewriter,
                   "sluice.semantic_cache": CACHE_CONFIGS.get(variant, BENCH_CACHE) if caching else None}
        stack = Stack(configs=configs, modules=modules, concurrency=1, with_mock=False, upstream_port=upstream_port,
                      workdir=work / variant, envoy_cpus=GATEWAY_CPUS, backend_cpus=OTHER_CPUS,
                      wasm_dir=module_dir, with_embedder=EMBEDDER if caching and embedder is None else False,
                      embedder_from=embedder if caching else None)
        started = time.monotonic()
        stack.start()
        stacks[variant] = stack
        stack.ready_seconds = round(time.monotonic() - started, 2)
        if caching:
            if embedder is None:
                embedder = stack
                extras["embedder_ms"] = embedder_latency(stack)
            if variant in ("cache-exact", "cache-semantic"):
                prime_cache(stack, bodies["short"])


def client_request(variant, answer, body):
    """The path and body a variant's client sends: a chat request, or for a `client-*` variant the
    same prompt in that client's schema (written beside the chat body once)."""
    if variant not in CLIENT_REQUESTS:
        return f"/{answer}/v1/chat/completions", body
    path, shape = CLIENT_REQUESTS[variant]
    translated = body.with_name(f"{body.stem}-{variant}.json")
    if not translated.exists():
        prompt = json.loads(body.read_text())["messages"][0]["content"]
        translated.write_text(json.dumps(shape(prompt)))
    method = "streamGenerateContent?alt=sse" if answer == "sse" else "generateContent"
    return f"/{answer}{path.format(method=method)}", translated


# A client of another schema: its path (`{method}` for Gemini's) and its body for a prompt.
CLIENT_REQUESTS = {
    "client-anthropic": ("/v1/messages", lambda prompt: {
        "model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}),
    "client-gemini": ("/v1beta/models/gpt-4o:{method}", lambda prompt: {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}]}),
}


def sample(stack, variant, answer, body, args, script):
    """One round of one variant: latency (1 connection, and paced), throughput and CPU."""
    path, body = client_request(variant, answer, body)
    url = stack.url(path)
    control = CACHE_CONTROL.get(variant, "")
    wrk(url, body, 4, 1, script, control)  # warm-up
    latency = wrk(url, body, args.latency_connections, args.seconds, script, control)
    paced = {"p50_ms": None, "p99_ms": None, "rps": None, "non_2xx": 0} if variant in UNPACED else \
        paced_load(stack, path, body, args.seconds, control)
    latency.update({"paced_p50_ms": paced["p50_ms"], "paced_p99_ms": paced["p99_ms"],
                    "paced_rps": paced["rps"], "non_2xx": latency["non_2xx"] + paced["non_2xx"]})
    pid = stack.procs["envoy"].popen.pid
    cpu_before = cpu_seconds(pid)
    throughput = wrk(url, body, args.throughput_connections, args.seconds, script, control)
    throughput["cpu_us"] = (cpu_seconds(pid) - cpu_before) * 1e6 / max(throughput["rps"] * args.seconds, 1)
    return latency, throughput


def point(runs) -> dict:
    """Medians over rounds."""
    return {
        "p50_ms": median([l["p50_ms"] for l, _ in runs]),
        "p99_ms": median([l["p99_ms"] for l, _ in runs]),
        "paced_p50_ms": median([l["paced_p50_ms"] for l, _ in runs]),
        "paced_p99_ms": median([l["paced_p99_ms"] for l, _ in runs]),
        "paced_rps": median([l["paced_rps"] for l, _ in runs]),
        "rps": median([t["rps"] for _, t in runs]),
        "cpu_us_per_request": median([t["cpu_us"] for _, t in runs]),
        "non_2xx": sum(l["non_2xx"] + t["non_2xx"] for l, t in runs),
    }


def versus(plain_runs, runs) -> dict:
    """Each variant run is paired with the plain run just before it: the machine's drift cancels
    in the pair, so the figures are medians of per-pair comparisons."""
    pairs = list(zip(plain_runs, runs))

    def added(field):
        return median([t[0][field] - p[0][field] for p, t in pairs
                       if t[0][field] is not None and p[0][field] is not None])

    return {"added_p50_ms": added("p50_ms"), "added_p99_ms": added("p99_ms"),
            "added_paced_p50_ms": added("paced_p50_ms"), "added_paced_p99_ms": added("paced_p99_ms"),
            "throughput_ratio": median([t[1]["rps"] / p[1]["rps"] for p, t in pairs if p[1]["rps"]]),
            "added_cpu_us": median([t[1]["cpu_us"] - p[1]["cpu_us"] for p, t in pairs])}


def measure_scenario(stacks, here, answer, body, args, script) -> dict:
    """Plain Envoy and each variant on one scenario, rounds alternating so drift on a shared
    machine hits all alike: {variant: {"point", "plain", "versus"}}."""
    samples = {v: [] for v in here}
    for _ in range(args.rounds):
        for variant in here:
            samples[variant].append(sample(stacks[variant], variant, answer, body, args, script))
    plain = point(samples["plain"])
    figures = {}
    for variant in here:
        figures[variant] = {"point": point(samples[variant]), "plain": plain,
                            "versus": None if variant == "plain" else versus(samples["plain"], samples[variant])}
        p = figures[variant]["point"]
        print(f"{variant:16} {answer}/{body.stem:9} p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms  "
              f"{p['rps']:.0f} req/s  {p['cpu_us_per_request']:.1f} us CPU/request", flush=True)
    return figures


def cache_facts(stack, variant) -> dict:
    """What the cache did during the runs (a semantic run must be semantic hits) and the module's
    own timings (ms resolution) on the lookups the variant is about."""
    log = stack.access_log()
    outcomes = {}
    for line in log:
        key = f"{line.get('cache')}/{line.get('cache_reason')}"
        outcomes[key] = outcomes.get(key, 0) + 1
    facts = {"cache_outcomes": outcomes}
    purpose = {"cache-exact": "exact", "cache-semantic": "semantic"}.get(variant, "none")
    for fact in ["cache_lookup_ms", "cache_embedding_ms"]:
        facts[f"median_{fact}"] = median([int(line[fact]) for line in log if line.get(fact) is not None
                                          and line.get("cache_reason") == purpose])
    return facts


def variant_facts(stacks) -> dict:
    """Start time, memory against plain Envoy, tokenizer preload, and the cache's own facts."""
    facts = {}
    for variant, stack in stacks.items():
        facts[variant] = {"ready_seconds": stack.ready_seconds, "rss_kb_after_load": rss_kb(stack.procs["envoy"].popen.pid),
                          "tokenizer_preload_ms": [int(x) for x in re.findall(r"preloaded .* in (\d+) ms", stack.envoy_log())]}
        if variant in CACHE_PROMPTS:
            facts[variant].update(cache_facts(stack, variant))
    plain = facts.get("plain", {}).get("rss_kb_after_load", 0)
    for variant, fact in facts.items():
        # One VM per worker plus one on the main thread: concurrency 1 gives two per module.
        if variant != "plain":
            fact["memory_per_vm_mb"] = round((fact["rss_kb_after_load"] - plain) / 1024 / 2, 1)
    return facts


def merge(path: Path, run: dict, figures: dict, facts: dict, extras: dict) -> dict:
    """The results file keeps each variant's figures from the run that last measured it:
    `--variants` re-measures some without losing the others."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        results = {}
    if results.get("format") != 2:
        results = {"format": 2, "variants": {}}
    for variant, fact in facts.items():
        results["variants"][variant] = {**run, **fact, "scenarios": figures.get(variant, {})}
    results.update(extras)
    return results


def main():
    args = parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    wasm_dir = Path(os.environ.get("SLUICE_WASM_DIR") or DEFAULT_WASM_DIR)
    bodies = write_bodies(work)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    variants = all_variants(wasm_dir, work)
    if args.variants:
        variants = [v for v in variants if v[0] in ["plain", *args.variants.split(",")]]
    run = {"measured": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpus": os.cpu_count(),
           "gateway_concurrency": 1, "seconds": args.seconds, "rounds": args.rounds, "paced_rate": PACED_RATE}
    stacks, figures, extras = {}, {}, {}

    upstream, upstream_port = start_upstream(work)
    try:
        start_variants(variants, work, upstream_port, bodies, stacks, extras)
        measured = {p for v in variants if v[0] != "plain" for p in v[4]}
        for answer in ["json", "sse"]:
            for prompt, body in bodies.items():
                if prompt not in measured or args.only not in (None, f"{answer}/{prompt}"):
                    continue
                # A cache hit is answered by the gateway, whatever the upstream would have sent:
                # the cache variants run once, on JSON answers.
                here = [v[0] for v in variants if prompt in v[4] and (answer == "json" or v[0] not in CACHE_PROMPTS)]
                if len(here) < 2:
                    continue
                for variant, figure in measure_scenario(stacks, here, answer, body, args, script).items():
                    figures.setdefault(variant, {})[f"{answer}/{prompt}"] = figure
        facts = variant_facts(stacks)
    finally:
        for stack in stacks.values():
            stack.stop()
        upstream.stop()

    if "pii-scrubber" in facts:
        extras["scrub_mb_per_s"] = scrub_throughput()
    if any(v in facts for v in CACHE_PROMPTS):
        extras["cache_scan"] = cache_scan.measure()
        extras["guard_us"] = guard_speed()
    if not args.variants or "guard-services" in args.variants.split(","):
        from . import guard_cost
        extras["guard_services"] = guard_cost.measure()
    if not args.variants or "pool" in args.variants.split(","):
        from . import pool_bench
        extras["pool_picking"] = pool_bench.measure()
    if not args.variants or "host-cost" in args.variants.split(","):
        from . import host_cost  # imports this module: loaded once it is complete
        extras["host_cost"] = host_cost.measure(wasm_dir)
    extras["module_bytes"] = {path.name: path.stat().st_size for path in sorted(wasm_dir.glob("sluice_*.wasm"))}
    results = merge(out_dir / "latest.json", run, figures, facts, extras)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    bench_report.write()
    print(bench_report.bench_section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
