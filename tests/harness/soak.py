"""`make soak`: the whole chain as the bundle, two workers, under steady load for ten minutes.

The `make bench-peers` upstream answers at once; wrk keeps 8 connections busy in 30-second slices.
After each slice: Envoy's RSS, its heap (`/memory`), the requests served and refused, and the
budget enforcer's checks in Redis per request. Writes bench/results/soak.json, and says whether
memory grew: the last third of the run against the first third (after a one-minute warm-up).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .bench import BENCH_BUDGET, BENCH_REWRITE, GATEWAY_CPUS, OTHER_CPUS, WRK_SCRIPT, rss_kb, start_upstream, wrk
from .bench_peers import PEERS_CACHE, bodies, budget_checks
from .stack import Stack, bundle

SLICE_SECONDS = 30
# Growth above this, median of the last third against the first, is reported as growth.
GROWTH_MB = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    body = bodies(work)[("envoy", "json")]
    upstream, port = start_upstream(work)
    stack = None
    try:
        configs = {"sluice.budget_enforcer": BENCH_BUDGET, "sluice.model_rewriter": BENCH_REWRITE,
                   "sluice.semantic_cache": PEERS_CACHE}
        stack = Stack(configs=configs, concurrency=2, with_mock=False, upstream_port=port, workdir=work / "sluice",
                      envoy_cpus=GATEWAY_CPUS, backend_cpus=OTHER_CPUS, patch=bundle).start()
        pid = stack.procs["envoy"].popen.pid
        url = stack.url("/json/v1/chat/completions")
        samples, started = [], time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            load = wrk(url, body, 8, SLICE_SECONDS, script, "no-store")
            memory = json.loads(stack.get_text(stack.admin("/memory")))
            samples.append({"minute": round((time.monotonic() - started) / 60, 2), "rps": round(load["rps"]),
                            "non_2xx": load["non_2xx"], "rss_mb": round(rss_kb(pid) / 1024, 1),
                            "allocated_mb": round(int(memory["allocated"]) / 2**20, 1)})
            print(samples[-1], flush=True)
        settled = [s for s in samples if s["minute"] >= 1] or samples
        third = max(1, len(settled) // 3)
        first = sorted(s["rss_mb"] for s in settled[:third])[third // 2]
        last = sorted(s["rss_mb"] for s in settled[-third:])[third // 2]
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "minutes": args.minutes,
                  "workers": 2, "connections": 8, "samples": samples, "rss_first_third_mb": first,
                  "rss_last_third_mb": last, "grew": last - first > GROWTH_MB,
                  "non_2xx": sum(s["non_2xx"] for s in samples), "budget_checks": budget_checks(stack),
                  "vm_failures": stack.vm_failures()}
    finally:
        if stack:
            stack.stop()
        upstream.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"RSS {first} MB in the first third, {last} MB in the last: "
          f"{'grew' if result['grew'] else 'no growth'}; {result['non_2xx']} answers not 2xx; "
          f"{result['budget_checks']['redis_per_request']} budget checks in Redis per request")
    return 1 if result["grew"] or result["non_2xx"] or result["vm_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
