"""`make bench-peers`: the same workload through plain Envoy, Envoy with the whole Sluice chain, and
the LiteLLM proxy, in one run.

The provider is the `make bench` upstream (a second Envoy answering at once with fixed JSON or SSE
chat completions), so the proxies are what is measured. Each proxy gets core 0 to itself (Envoy
with one worker; LiteLLM with one worker); wrk and the upstream share the other core(s).

- plain Envoy: the gateway bootstrap without any module;
- Sluice: every module on the request path, as `make run` runs them. The budget enforcer checks
  a key with three limits in Redis (through webdis) and charges spend after; the PII scrubber
  scans the prompt; the semantic cache (`mode: exact`) looks the request up in Redis and misses
  (`Cache-Control: no-store`, so every request takes the miss path); the model rewriter routes the
  logical model; the token counter counts and prices the answer;
- Sluice bundle: the same chain from one `.wasm` sharing one VM per worker (plugins/bundle);
- Sluice bundle without the cache: the same, semantic cache left out (the "cache off" target);
- LiteLLM proxy (`litellm[proxy]`, its own venv): the same model routed to the same upstream;
- Portkey's gateway (`@portkey-ai/gateway`, Node, its own npm prefix): routed to the upstream
  with `x-portkey-provider` and `x-portkey-custom-host`.

Per proxy and answer kind: p50/p99 latency at 1 connection, requests/s at 16 connections, and
requests per CPU-second of the proxy's own processes. Medians of alternating rounds. Per proxy:
resident memory idle and after the load, and the time from start to ready. Results go to
bench/results/peers.json and, through harness/bench_report.py, docs/benchmark-results.md.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from . import bench_report
from .bench import (BENCH_BUDGET, BENCH_KEY, BENCH_REWRITE, GATEWAY_CPUS, OTHER_CPUS, SHORT_PROMPT, WRK_SCRIPT,
                    cpu_seconds, median, rss_kb, start_upstream, wrk)
from .procs import Proc, free_port, http_ok, wait_until
from .stack import Stack, bundle

LITELLM_VERSION = "1.100.5"  # the newest whose dependencies the package index serves here
PORTKEY_VERSION = "1.15.2"
# The cache misses on purpose: the miss path is what every new prompt pays.
PEERS_CACHE = {"namespace": "team", "mode": "exact"}
CHAIN = ["sluice.budget_enforcer", "sluice.pii_scrubber", "sluice.semantic_cache", "sluice.model_rewriter",
         "sluice.token_counter", "sluice.provider_adapter"]
WITHOUT_CACHE = [m for m in CHAIN if m != "sluice.semantic_cache"]


def envoy_memory(stack) -> dict:
    """Envoy's own view next to RSS: its heap (`/memory`) and the wasm VMs it keeps."""
    memory = json.loads(stack.get_text(stack.admin("/memory")))
    stats = dict(line.split(": ", 1) for line in stack.get_text(stack.admin("/stats?filter=wasm")).splitlines()
                 if ": " in line)
    vms = sum(int(v) for k, v in stats.items() if k.endswith(".active") and "runtime" in k and v.strip().isdigit())
    # The token counter logs its VM's linear memory once configured (in the bundle, every plugin's).
    linear = [int(line.rsplit("linear memory ", 1)[1].split()[0]) for line in stack.envoy_log().splitlines()
              if "linear memory " in line]
    return {"heap_mb": round(int(memory.get("heap_size", 0)) / 2**20), "allocated_mb":
            round(int(memory.get("allocated", 0)) / 2**20), "wasm_vms": vms,
            "linear_mb_per_vm": round(max(linear) / 1024, 1) if linear else None}


def budget_checks(stack) -> dict:
    """The budget enforcer's checks by source: against a lease, or a call to Redis."""
    lease, redis = (stack.metric("sluice_budget_checks_total", source=s) for s in ("lease", "redis"))
    return {"lease": lease, "redis": redis, "redis_per_request": round(redis / (lease + redis), 4) if lease + redis else None}


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        children = subprocess.run(["pgrep", "-P", str(current)], capture_output=True, text=True).stdout.split()
        pending += [int(c) for c in children]
    return total


def bridge_round_trips(stack, calls=2000) -> dict:
    """Median microseconds of one GET: straight to Redis (RESP) and through webdis (HTTP), from a
    raw keep-alive socket, so the bridge's own share of a module's callout is visible."""
    def timed(port, request: bytes, done: bytes) -> float:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(calls):
            started, data = time.perf_counter(), b""
            sock.sendall(request)
            while done not in data:
                data += sock.recv(4096)
            times.append((time.perf_counter() - started) * 1e6)
        sock.close()
        return round(median(times))
    key = b"sluice:cache:bench"
    resp = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    body = b"GET/" + key.replace(b":", b"%3A")
    http = (b"POST / HTTP/1.1\r\nHost: bridge\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))
    return {"redis_us": timed(stack.redis_port, resp, b"$-1\r\n"),
            "webdis_us": timed(stack.webdis_port, http, b'{"GET":null}')}


def start_litellm(litellm_bin: Path, upstream_port: int, work: Path) -> tuple:
    port = free_port()
    config = {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{upstream_port}/json/v1", "api_key": "sk-bench"}},
            {"model_name": "gpt-4o-stream", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{upstream_port}/sse/v1", "api_key": "sk-bench"}},
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    (work / "litellm.yaml").write_text(yaml.safe_dump(config))
    # No network: the bundled model price map, no telemetry.
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    proc = Proc("litellm", ["taskset", "-c", GATEWAY_CPUS, str(litellm_bin), "--config", str(work / "litellm.yaml"),
                            "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                work / "litellm.log", env=env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"), "litellm", 180, proc)
    return proc, port


def start_portkey(portkey_dir: Path, work: Path) -> tuple:
    port = free_port()
    server = portkey_dir / "node_modules/@portkey-ai/gateway/build/start-server.js"
    proc = Proc("portkey", ["taskset", "-c", GATEWAY_CPUS, "node", str(server), f"--port={port}", "--headless"],
                work / "portkey.log")
    wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, "portkey", 60, proc)
    return proc, port


def bodies(work: Path) -> dict:
    """Request bodies by (target kind, answer): the same prompt everywhere; streams ask for one."""
    out = {}
    for answer in ["json", "sse"]:
        for target in ["envoy", "litellm", "portkey"]:
            body = {"model": "gpt-4o-stream" if (target == "litellm" and answer == "sse") else "gpt-4o",
                    "messages": [{"role": "user", "content": SHORT_PROMPT}]}
            if answer == "sse":
                body["stream"] = True
            path = work / f"{target}-{answer}.json"
            path.write_text(json.dumps(body))
            out[(target, answer)] = path
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm", required=True, help="the `litellm` executable (from its own venv)")
    parser.add_argument("--portkey", type=Path, default=None, help="the npm prefix holding @portkey-ai/gateway")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-peers-"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    request_bodies = bodies(work)

    upstream, upstream_port = start_upstream(work)
    procs, targets = {}, {}
    try:
        variants = [("plain", [], None), ("sluice", None, None), ("sluice-bundle", None, bundle),
                    ("sluice-bundle-nocache", WITHOUT_CACHE, bundle)]
        for name, modules, patch in variants:
            configs = {"sluice.budget_enforcer": BENCH_BUDGET, "sluice.model_rewriter": BENCH_REWRITE,
                       "sluice.semantic_cache": PEERS_CACHE}
            stack = Stack(configs=configs, modules=modules, concurrency=1, with_mock=False, upstream_port=upstream_port,
                          workdir=work / name, envoy_cpus=GATEWAY_CPUS, backend_cpus=OTHER_CPUS, patch=patch).start()
            procs[name] = stack
            targets[name] = {"url": (lambda s: lambda answer: s.url(f"/{answer}/v1/chat/completions"))(stack),
                             "pid": stack.procs["envoy"].popen.pid, "kind": "envoy", "ready": stack.envoy_ready_seconds}
        started = time.monotonic()
        litellm, litellm_port = start_litellm(Path(args.litellm), upstream_port, work)
        procs["litellm"] = litellm
        targets["litellm"] = {"url": lambda answer: f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                              "pid": litellm.popen.pid, "kind": "litellm", "ready": round(time.monotonic() - started, 2)}
        if args.portkey:
            started = time.monotonic()
            portkey, portkey_port = start_portkey(args.portkey, work)
            procs["portkey"] = portkey
            targets["portkey"] = {
                "url": lambda answer: f"http://127.0.0.1:{portkey_port}/v1/chat/completions",
                "headers": lambda answer: {"x-portkey-provider": "openai",
                                           "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/{answer}/v1"},
                "pid": portkey.popen.pid, "kind": "portkey", "ready": round(time.monotonic() - started, 2)}
        idle = {name: rss_kb(t["pid"]) for name, t in targets.items()}

        results = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpus": os.cpu_count(),
                   "litellm": LITELLM_VERSION, "portkey": PORTKEY_VERSION if args.portkey else None,
                   "seconds": args.seconds, "rounds": args.rounds, "answers": {}}
        for answer in ["json", "sse"]:
            samples = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    url, body = target["url"](answer), request_bodies[(target["kind"], answer)]
                    headers = target.get("headers", lambda _: None)(answer)
                    wrk(url, body, 4, 1, script, "no-store", headers)  # warm-up
                    latency = wrk(url, body, 1, args.seconds, script, "no-store", headers)
                    cpu_before, started = process_tree_cpu(target["pid"]), time.monotonic()
                    load = wrk(url, body, 16, args.seconds, script, "no-store", headers)
                    cpu = process_tree_cpu(target["pid"]) - cpu_before
                    done = load["rps"] * (time.monotonic() - started)
                    samples[name].append({"p50_ms": latency["p50_ms"], "p99_ms": latency["p99_ms"], "rps": load["rps"],
                                          "requests_per_cpu_second": done / cpu if cpu > 0 else None,
                                          "non_2xx": latency["non_2xx"] + load["non_2xx"]})
            points = {}
            for name, runs in samples.items():
                points[name] = {k: median([r[k] for r in runs]) for k in ["p50_ms", "p99_ms", "rps",
                                                                       "requests_per_cpu_second"]}
                points[name]["non_2xx"] = sum(r["non_2xx"] for r in runs)
                print(f"{name:8} {answer}  p50 {points[name]['p50_ms']:.3f} ms  p99 {points[name]['p99_ms']:.3f} ms  "
                      f"{points[name]['rps']:.0f} req/s  {points[name]['requests_per_cpu_second'] or 0:.0f} req per "
                      f"CPU-second  non-2xx {points[name]['non_2xx']}", flush=True)
            for name in [n for n in targets if n != "plain"]:
                pairs = list(zip(samples["plain"], samples[name]))
                points[name]["added_p50_ms"] = median([t["p50_ms"] - p["p50_ms"] for p, t in pairs])
                points[name]["added_p99_ms"] = median([t["p99_ms"] - p["p99_ms"] for p, t in pairs])
            results["answers"][answer] = points
        # A proxy that failed answers: why, from its own log (Portkey's streams on Node 20, say).
        results["failures"] = {}
        for answer, points in results["answers"].items():
            for name, point in points.items():
                if point["non_2xx"] and hasattr(procs[name], "log"):
                    reason = next((line.strip() for line in procs[name].log().splitlines() if "Error" in line), "")
                    results["failures"][f"{answer}/{name}"] = {"non_2xx": point["non_2xx"], "reason": reason[:200]}
        results["proxies"] = {name: {"rss_mb_idle": round(idle[name] / 1024), "rss_mb_after_load":
                                     round(rss_kb(t["pid"]) / 1024), "ready_seconds": t["ready"]}
                              for name, t in targets.items()}
        for name, t in targets.items():
            if t["kind"] == "envoy":
                results["proxies"][name]["envoy"] = envoy_memory(procs[name])
            if name.startswith("sluice"):
                results["proxies"][name]["budget_checks"] = budget_checks(procs[name])
        results["bridge_round_trip"] = bridge_round_trips(procs["sluice"])
        sluice_log = procs["sluice"].access_log()
        # Requests wrk cut at the end of a run never reached the modules: they carry no facts.
        answered = [line for line in sluice_log if line.get("cache")]
        results["sluice_cache_outcomes"] = sorted({f"{l['cache']}/{l.get('cache_reason')}" for l in answered})
        results["sluice_budget_decisions"] = sorted({str(l.get("budget")) for l in answered})
    finally:
        for proc in procs.values():
            proc.stop()
        upstream.stop()
    (out_dir / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    bench_report.write()
    print(bench_report.peers_section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
