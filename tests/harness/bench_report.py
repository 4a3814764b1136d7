"""docs/benchmark-results.md, generated whole from bench/results/latest.json (`make bench`) and
bench/results/peers.json (`make bench-peers`).

`make docs` rewrites it, and so does each benchmark run; a test fails when it is out of date.
How to read the figures, and what they mean, is in the hand-written docs/benchmarks.md.

Run: python -m harness.bench_report [--write]
"""

import argparse
import json
import sys

from .stack import ROOT

RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmark-results.md"

HEADER = ("# Benchmark results\n\nGenerated from `bench/results/*.json` by `make bench`, `make bench-peers` and "
          "`make docs`; do not edit. What is measured and how to read it: [benchmarks.md](benchmarks.md).\n")

# (variant, title, latency at a fixed rate instead of at one connection)
SECTIONS = [
    ("wasm-floor", "A do-nothing wasm filter (the floor any wasm filter pays)", False),
    ("token-counter", "Token counter", False),
    ("budget-enforcer", "Budget enforcer (virtual key, three limits checked against leases: one atomic Redis "
                        "call through webdis per lease, not per request; spend charged after); latency at a fixed {rate} requests/s (open loop)", True),
    ("model-rewriter", "Model rewriter, rewrite only (logical `gpt-4o` to an OpenAI target: body rewritten, route "
                       "picked from the `x-sluice-cluster` header after Envoy's buffer filter)", False),
    ("translation", "Model rewriter + provider adapter (the same request sent to an Anthropic target: translated "
                    "to Messages, the answer translated back, JSON or SSE)", False),
    ("translation-gemini", "Model rewriter + provider adapter to a Gemini target (translated to `generateContent` "
                           "at the routed model's path, the answer back, JSON or SSE)", False),
    ("translation-bedrock", "Model rewriter + provider adapter to a Bedrock target (translated to Converse; the "
                            "stream decoded from AWS event-stream frames, checksums verified)", False),
    ("client-anthropic", "Model rewriter + provider adapter, an Anthropic Messages client to the OpenAI target "
                         "(the request translated to chat completions, the answer back to Messages, JSON or SSE)", False),
    ("client-gemini", "Model rewriter + provider adapter, a Gemini client (`generateContent`, "
                      "`streamGenerateContent?alt=sse`) to the OpenAI target, translated both ways", False),
    ("pii-scrubber", "PII scrubber, default config (every built-in entity redacted, the answer restored; prompts "
                     "of ~2 KB and ~100 KB holding an email, a phone number and an IP address per ~330 bytes)", False),
    ("cache-exact", "Semantic cache, exact hit (one Redis `GET` through webdis, answered by the gateway; plain "
                    "Envoy asks the upstream)", False),
    ("cache-semantic", "Semantic cache, semantic hit (a paraphrase: exact miss, embedding callout, Lua search, "
                       "guard; answered by the gateway). The embedding service answers from memory, so this is "
                       "the module's cost: add your embedding server's latency", False),
    ("cache-miss", "Semantic cache, miss (exact `GET`, embedding callout, Lua search over an empty scope, then "
                   "upstream; `Cache-Control: no-store`). As above, without the model's time", False),
    ("cache-exact-miss", "Semantic cache with `mode: exact`, miss (one `GET`, then upstream)", False),
]


def load(name):
    try:
        return json.loads((RESULTS / name).read_text())
    except (OSError, ValueError):
        return None


def table(scenarios, rate):
    """Rows against plain Envoy; latency at the fixed `rate` when given, else at one connection."""
    if rate:
        head = [f"| answer / prompt | plain p50 at {rate}/s | added p50 at {rate}/s | added p99 at "
                f"{rate}/s | achieved rate | throughput vs plain | added CPU per request |",
                "|---|---|---|---|---|---|---|"]
    else:
        head = ["| answer / prompt | plain p50 | added p50 | added p99 | throughput vs plain | added CPU per request |",
                "|---|---|---|---|---|---|"]
    rows = []
    for name, figure in scenarios.items():
        p, d, x = figure["plain"], figure["versus"], figure["point"]
        if rate:
            rows.append(f"| {name} | {p['paced_p50_ms']:.3f} ms | {d['added_paced_p50_ms']:+.3f} ms | "
                        f"{d['added_paced_p99_ms']:+.3f} ms | {x['paced_rps']:.0f}/s | "
                        f"{d['throughput_ratio'] * 100:.1f}% | {d['added_cpu_us']:+.0f} us |")
        else:
            rows.append(f"| {name} | {p['p50_ms']:.3f} ms | {d['added_p50_ms']:+.3f} ms | {d['added_p99_ms']:+.3f} ms | "
                        f"{d['throughput_ratio'] * 100:.1f}% | {d['added_cpu_us']:+.0f} us (plain "
                        f"{p['cpu_us_per_request']:.0f}) |")
    return head + rows


def bench_section(r) -> str:
    variants = r["variants"]
    lines = ["## Each module against plain Envoy (`make bench`)", "",
             "Gateway Envoy (1 worker) pinned to core 0; wrk, the upstream Envoy, Redis, webdis and the embedding "
             "service on the other. Each table comes from one run: rounds alternate plain Envoy and the module, and "
             "figures are medians of per-round differences and ratios. Latency at 1 connection (or at a fixed rate "
             "where said); throughput and gateway CPU at 16 connections.", ""]
    for variant, title, paced in SECTIONS:
        v = variants.get(variant)
        if not v or not v.get("scenarios"):
            continue
        rate = v["paced_rate"] if paced else None
        lines += [f"{title.format(rate=rate)}. Measured {v['measured']}, {v['rounds']} rounds of {v['seconds']} s on "
                  f"{v['cpus']} cores:", "", *table(v["scenarios"], rate), ""]
    if r.get("scrub_mb_per_s"):
        figures = ", ".join(f"{name} {mbs:.0f} MB/s" for name, mbs in r["scrub_mb_per_s"].items())
        lines += [f"PII scrubber throughput inside the module (scrub alone, wasm in V8, every built-in detector; "
                  f"`plugins/pii-scrubber/examples/scrub_throughput.rs`): {figures}.", ""]
    if r.get("guard_us"):
        lines += [f"Semantic cache guard inside the module (one comparison of two prompts, wasm in V8, over the "
                  f"1,000 labelled pairs; `plugins/semantic-cache/examples/guard_speed.rs`): {r['guard_us']:.1f} µs.", ""]
    g = r.get("guard_services")
    if g:
        shape = g["stream_shape"]
        lines += ["Guard services (`harness/guard_cost.py`, `--variants guard-services`): the guard filters with the mock "
                  "provider's scripted moderation service, against plain Envoy in front of the same mock, 1 worker. "
                  f"JSON: median of sequential chat requests. Streams: a {shape['piece_chars']}-character event every "
                  f"{shape['delay_ms']} ms, {shape['events']} events; medians over streams.", "",
                  "| gateway | JSON p50 ms | added | time to first token ms | added | chunk gap p50 ms | last byte ms | added |",
                  "|---|---|---|---|---|---|---|---|"]
        labels = {"plain": "plain Envoy", "prompt": "moderation on the prompt",
                  "holdback": "moderation on the answer, holdback", "cut": "moderation on the answer, cut"}
        for name, label in labels.items():
            row = g.get(name, {})
            cells = [row.get("json_p50_ms"), row.get("added_json_p50_ms"), row.get("ttft_ms"), row.get("added_ttft_ms"),
                     row.get("chunk_gap_p50_ms"), row.get("last_byte_ms"), row.get("added_last_byte_ms")]
            lines.append(f"| {label} | " + " | ".join("" if c is None else str(c) for c in cells) + " |")
        lines += ["", f"The moderation service alone answers in {g['plain'].get('moderation_service_p50_ms')} ms (median, "
                  "called directly): the rest of a check's cost is the gateway's. Holdback releases text in bursts once "
                  "a check passed it (hence the small chunk gap), so its cost is the time to first token; cut streams at "
                  "once and holds only the end of the answer for the last check.", ""]
    lines += pool_lines(r.get("pool_picking"))
    cached = {name: v for name, v in variants.items() if "cache_outcomes" in v}
    if cached:
        lines += ["What the cache did during those runs (access log, `status/reason`): " + "; ".join(
            f"{name}: " + ", ".join(f"{k} {n}" for k, n in sorted(v["cache_outcomes"].items(), key=lambda kv: -kv[1]))
            for name, v in cached.items()) + ".", ""]
        lines += ["Median timings the module reports over all runs, saturation included (access log, ms "
                  "resolution): " + "; ".join(
                      f"{name}: lookup {v.get('median_cache_lookup_ms')} ms, of which embedding "
                      f"{v.get('median_cache_embedding_ms')} ms" for name, v in cached.items()) + ".", ""]
    if r.get("embedder_ms"):
        lines += [f"The reference embedding service's model time (tests/embedder, one core; a new short text per "
                  f"call, one at a time, over HTTP): p50 {r['embedder_ms']['p50']} ms, p99 {r['embedder_ms']['p99']} ms.",
                  ""]
    if r.get("cache_scan"):
        lines += ["Semantic cache search in Redis by entries in the scope (`python -m harness.cache_scan`: the "
                  "module's Lua, real all-MiniLM-L6-v2 vectors of the labelled prompts, default `bucket_capacity` "
                  "256; Redis time per search):", "",
                  "| entries in the scope | read | compared in full | Redis time per search | comparing all in full |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['entries']} | {x['read']} | {x['compared']} | {x['redis_us_per_search']:.0f} us | "
                  f"{x['redis_us_without_signatures']:.0f} us |" for x in r["cache_scan"]]
        lines.append("")
    if r.get("host_cost"):
        floor = r["host_cost"][0]["floor_us"]
        lines += [f"What one host call costs Envoy (`python -m harness.host_cost`: the wasm floor filter making "
                  f"20-50 calls of one kind per request, gateway CPU per request against the floor making none, "
                  f"{floor} us per request):", "", "| host call | us per call |", "|---|---|"]
        lines += [f"| `{x['call']}` | {x['us_per_call']:.2f} |" for x in r["host_cost"]]
        lines.append("")
    lines += ["| variant | memory per VM against plain Envoy | gateway ready in | measured |", "|---|---|---|---|"]
    lines += [f"| {name} | {v['memory_per_vm_mb']} MB | {v['ready_seconds']} s | {v['measured']} |"
              for name, v in variants.items() if "memory_per_vm_mb" in v]
    lines.append("")
    if r.get("module_bytes"):
        lines += ["Module sizes: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in r["module_bytes"].items())
                  + ".", ""]
    return "\n".join(lines)


def pool_lines(p) -> list:
    if not p:
        return []
    shape = p["shape"]
    labels = {"picked": "the model rewriter's pick (override-host)", "least_request": "Envoy least-request",
              "round_robin": "Envoy round robin"}
    lines = [f"Endpoint picking in a self-hosted pool (`harness/pool_bench.py`, `--variants pool`): the simulated vLLM "
             f"pool's {shape['endpoints']} endpoints (one 1.6x slower; one LoRA adapter loaded each, room for one; "
             f"small prefix caches), {shape['clients']} clients in a closed loop, {shape['requests']} requests per run "
             f"(40% for three adapters, long shared system prompts, {shape['out_tokens']} output tokens); medians over "
             f"{shape['rounds']} rounds.", "",
             "| balancing | p50 ms | p99 ms | requests/s | adapter loads | prefix-cache hits |", "|---|---|---|---|---|---|"]
    for mode, label in labels.items():
        row = p.get(mode)
        if row:
            lines.append(f"| {label} | {row['p50_ms']} | {row['p99_ms']} | {row['throughput_rps']} | {row['lora_loads']} | "
                         f"{row['prefix_hit_ratio']:.0%} |")
    return lines + [""]


def peers_section(r) -> str:
    portkey = f", Portkey {r['portkey']} (Node)" if r.get("portkey") else ""
    lines = [f"Measured {r['date']} on {r['cpus']} cores (`make bench-peers`): each proxy alone on core 0 (Envoy "
             f"with one worker, LiteLLM {r['litellm']} with one worker{portkey}), wrk and the upstream on the other; "
             f"{r['rounds']} alternating rounds of {r['seconds']} s, medians. Latency at 1 connection, throughput "
             "at 16.", "",
             "| answer | proxy | p50 | added p50 | p99 | added p99 | requests/s | requests per CPU-second |",
             "|---|---|---|---|---|---|---|---|"]
    failures = r.get("failures", {})
    for answer, points in r["answers"].items():
        for name, p in points.items():
            if f"{answer}/{name}" in failures:
                lines.append(f"| {answer} | {name} | failed: {p['non_2xx']} answers not 2xx (below) | | | | | |")
                continue
            added = lambda k: f"{p[k]:+.3f} ms" if k in p else "—"  # noqa: E731
            lines.append(f"| {answer} | {name} | {p['p50_ms']:.3f} ms | {added('added_p50_ms')} | {p['p99_ms']:.3f} ms | "
                         f"{added('added_p99_ms')} | {p['rps']:.0f} | {p['requests_per_cpu_second'] or 0:.0f} |")
    lines.append("")
    verdicts = []
    for answer, points in r["answers"].items():
        sluice, litellm = points["sluice"]["added_p50_ms"], points["litellm"]["added_p50_ms"]
        for variant, target in [("sluice-bundle", 50), ("sluice-bundle-nocache", 70)]:
            if variant not in points:
                continue
            bundle = points[variant]
            what = "the bundle" if variant == "sluice-bundle" else "the bundle without the cache"
            verdicts.append(f"{answer}: {what} adds {bundle['added_p50_ms']:.3f} ms p50 and serves "
                            f"{bundle['requests_per_cpu_second'] / points['plain']['requests_per_cpu_second'] * 100:.0f}% "
                            f"of plain Envoy's requests per CPU-second (target at least {target}%)")
        verdicts.append(f"{answer}: Sluice adds {sluice:.3f} ms p50 (target at most 1 ms: "
                        f"{'met' if sluice <= 1 else 'not met'}), {sluice / litellm * 100:.1f}% of LiteLLM's "
                        f"{litellm:.3f} ms (target at most 10%: {'met' if sluice <= litellm / 10 else 'not met'})")
    for key, failure in failures.items():
        answer, name = key.split("/", 1)
        lines += [f"{name} failed on {answer}: {failure['non_2xx']} answers were not 2xx; its log says "
                  f"`{failure['reason']}`.", ""]
    if r.get("proxies"):
        lines += ["| proxy | memory idle | memory after the load | Envoy heap / allocated, wasm VMs | ready after start "
                  "| budget checks in Redis per request |", "|---|---|---|---|---|---|"]
        for name, x in r["proxies"].items():
            envoy = x.get("envoy")
            heap = f"{envoy['heap_mb']} / {envoy['allocated_mb']} MB, {envoy['wasm_vms']} VMs" if envoy else "—"
            if envoy and envoy.get("linear_mb_per_vm"):
                heap += f" (token counter's VM: {envoy['linear_mb_per_vm']} MB linear memory)"
            checks = x.get("budget_checks", {}).get("redis_per_request")
            lines.append(f"| {name} | {x['rss_mb_idle']} MB | {x['rss_mb_after_load']} MB | {heap} | "
                         f"{x['ready_seconds']} s | {'—' if checks is None else f'{checks:.3f}'} |")
        lines.append("")
    bridge = r["bridge_round_trip"]
    lines += ["; ".join(verdicts) + ".", "",
              f"One Redis `GET` from a raw keep-alive socket, median: {bridge['redis_us']} µs straight to Redis, "
              f"{bridge['webdis_us']} µs through webdis (the HTTP bridge the modules call).", "",
              f"Sluice's chain during the run: cache outcomes {', '.join(r['sluice_cache_outcomes'])}; budget "
              f"decisions {', '.join(r['sluice_budget_decisions'])}.", ""]
    return "\n".join(lines)


def soak_section(r) -> str:
    rss = [s["rss_mb"] for s in r["samples"]]
    return "\n".join([
        f"Measured {r['date']} (`make soak`): the bundle with {r['workers']} workers, {r['connections']} connections "
        f"for {r['minutes']:g} minutes against the `make bench-peers` upstream, sampled every 30 s.", "",
        f"- RSS from {min(rss)} to {max(rss)} MB; median {r['rss_first_third_mb']} MB in the first third after a "
        f"minute's warm-up, {r['rss_last_third_mb']} MB in the last: {'grew' if r['grew'] else 'no growth'}.",
        f"- Requests/s per slice from {min(s['rps'] for s in r['samples'])} to {max(s['rps'] for s in r['samples'])}; "
        f"{r['non_2xx']} answers not 2xx; {len(r['vm_failures'])} VM failures.",
        f"- Budget checks that reached Redis: {r['budget_checks']['redis_per_request']} per request.", ""])


def page() -> str:
    parts = [HEADER]
    results = load("latest.json")
    if results and results.get("format") == 2:
        parts.append(bench_section(results))
    peers = load("peers.json")
    if peers:
        parts.append("## Side by side with LiteLLM (`make bench-peers`)\n\n" + peers_section(peers))
    soak = load("soak.json")
    if soak:
        parts.append("## Ten minutes under load (`make soak`)\n\n" + soak_section(soak))
    return "\n".join(parts).rstrip("\n") + "\n"


def write():
    PAGE.write_text(page())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    if parser.parse_args().write:
        write()
    else:
        sys.stdout.write(page())
    return 0


if __name__ == "__main__":
    sys.exit(main())
