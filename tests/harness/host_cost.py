"""What one proxy-wasm host call costs Envoy, per kind of call: the wasm floor filter
(tests/wasm-floor) makes `count` calls of one kind on each request, and the gateway's CPU per
request is compared with the floor making none, in the same run (one worker, its own core).

Most of a Sluice module's CPU is on Envoy's side of such calls rather than in its own wasm code
(perf: 7-13% of a module's samples are in JIT code), so this table prices a module's design.

`--census` counts the calls themselves: the bundle built with the `census` feature bumps an Envoy
counter per host call (by kind and header or property name), and the whole chain as
`make bench-peers` runs it is driven for a few seconds; calls per request are the counters
over Envoy's request count.

Run: python -m harness.host_cost [--census]  (the price table is also part of `make bench`)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bench import GATEWAY_CPUS, OTHER_CPUS, SHORT_PROMPT, WRK_SCRIPT, cpu_seconds, median, start_upstream, wrk
from .stack import DEFAULT_WASM_DIR, ROOT, Stack, bundle, wasm_filters

# (call, calls per request): enough calls that each one's price stands out of the noise.
CALLS = [("get_header", 50), ("get_headers", 50), ("set_header", 20), ("get_property", 50),
         ("get_missing_property", 50), ("set_property", 20), ("envoy_property", 50), ("increment_counter", 50),
         ("record_histogram", 50), ("set_gauge", 50), ("define_metric", 50), ("current_time", 50),
         ("log_filtered", 50), ("get_body", 50)]


def probe(wasm: Path, setting: str):
    """A Stack patch: the token counter's filter loads the floor, configured with `setting`."""
    def patch(config):
        for f in wasm_filters(config):
            f["vm_config"]["code"]["local"]["filename"] = str(wasm)
            f["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": setting}
    return patch


def measure(wasm_dir=DEFAULT_WASM_DIR, seconds=3, rounds=3) -> list:
    wasm = Path(wasm_dir) / "sluice_wasm_floor.wasm"
    work = Path(tempfile.mkdtemp(prefix="sluice-host-cost-"))
    script, body = work / "post.lua", work / "short.json"
    script.write_text(WRK_SCRIPT)
    body.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": SHORT_PROMPT}]}))
    upstream, port = start_upstream(work)
    try:
        def us_per_request(setting):
            with Stack(modules=["sluice.token_counter"], concurrency=1, with_mock=False, upstream_port=port,
                       workdir=work / setting.replace(" ", "-"), envoy_cpus=GATEWAY_CPUS, backend_cpus=OTHER_CPUS,
                       patch=probe(wasm, setting)) as stack:
                url, pid = stack.url("/json/v1/chat/completions"), stack.procs["envoy"].popen.pid
                wrk(url, body, 4, 1, script, "no-store")
                samples = []
                for _ in range(rounds):
                    before, started = cpu_seconds(pid), time.monotonic()
                    load = wrk(url, body, 16, seconds, script, "no-store")
                    requests = load["rps"] * (time.monotonic() - started)
                    samples.append(1e6 * (cpu_seconds(pid) - before) / requests)
                return median(samples)
        floor = us_per_request("none 0")
        rows = []
        for call, count in CALLS:
            cost = us_per_request(f"{call} {count}")
            rows.append({"call": call, "us_per_call": round((cost - floor) / count, 2), "floor_us": round(floor, 1)})
            print(f"{call:22} {rows[-1]['us_per_call']:.2f} us per call", flush=True)
        return rows
    finally:
        upstream.stop()


def census(seconds=4) -> dict:
    """Host calls per request of the whole chain (the bundle), by call, most frequent first."""
    from .bench import BENCH_BUDGET, BENCH_REWRITE
    from .bench_peers import CHAIN, PEERS_CACHE
    target = ROOT / "target" / "census"
    subprocess.run(["cargo", "build", "-q", "--profile", "bundle", "--target", "wasm32-wasip1", "-p", "sluice-bundle",
                    "--features", "census", "--target-dir", str(target)], cwd=ROOT, check=True, timeout=1800)
    work = Path(tempfile.mkdtemp(prefix="sluice-census-"))
    wasm_dir = work / "wasm"
    wasm_dir.mkdir()
    for module in DEFAULT_WASM_DIR.glob("sluice_*.wasm"):
        (wasm_dir / module.name).symlink_to(module)
    (wasm_dir / "sluice_bundle.wasm").unlink()
    (wasm_dir / "sluice_bundle.wasm").symlink_to(target / "wasm32-wasip1" / "bundle" / "sluice_bundle.wasm")
    script, body = work / "post.lua", work / "short.json"
    script.write_text(WRK_SCRIPT)
    body.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": SHORT_PROMPT}]}))
    configs = {"sluice.budget_enforcer": BENCH_BUDGET, "sluice.model_rewriter": BENCH_REWRITE,
               "sluice.semantic_cache": PEERS_CACHE}

    def counters(stack) -> dict:
        text = stack.get_text(stack.admin("/stats?filter=(sluice_census|downstream_rq_completed)"))
        pairs = (line.split(": ", 1) for line in text.splitlines() if ": " in line)
        out = {}
        for name, value in pairs:
            if value.strip().isdigit() and ("sluice_census." in name or name == "http.gateway.downstream_rq_completed"):
                key = name.split("sluice_census.", 1)[1] if "sluice_census." in name else "requests"
                out[key] = out.get(key, 0) + int(value)
        return out
    with Stack(configs=configs, modules=CHAIN, concurrency=1, wasm_dir=wasm_dir, patch=bundle,
               workdir=work / "chain") as stack:
        url = stack.url("/v1/chat/completions")
        # Warm: every worker's exact index in sync, leases taken.
        wrk(url, body, 4, 3, script, "no-store")
        before = counters(stack)
        wrk(url, body, 4, seconds, script, "no-store")
        after = counters(stack)
    requests = after.get("requests", 0) - before.get("requests", 0)
    per_request = {k: round((v - before.get(k, 0)) / requests, 2) for k, v in after.items() if k != "requests"}
    per_request = dict(sorted(((k, v) for k, v in per_request.items() if v >= 0.01), key=lambda kv: -kv[1]))
    print(f"{sum(per_request.values()):.0f} host calls per request ({requests} requests)")
    for call, count in per_request.items():
        print(f"{count:7.2f}  {call}")
    return per_request


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--census", action="store_true", help="count the chain's host calls per request instead")
    if parser.parse_args().census:
        census()
    else:
        measure()
    sys.exit(0)
