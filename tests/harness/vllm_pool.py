"""A simulated pool of vLLM endpoints for the endpoint picker's tests, `make run` and `make bench`.

Each endpoint is its own HTTP server on loopback serving OpenAI chat completions (JSON and SSE) and
vLLM's Prometheus metrics, with the costs that make picking matter:

- a real queue: at most `slots` requests run at once (vLLM's `max_num_seqs`) and their tokens must
  fit the KV-cache budget (`kv_tokens`); the rest wait, in order;
- per-token service time: prefill per prompt token, decode per output token (slower as the batch
  grows);
- a prefix cache: prompt blocks (64 characters) an endpoint served before are not prefilled again;
- LoRA adapters: a request for an adapter the endpoint has not loaded waits `lora_load_ms` to load
  it, evicting the least recently used when `max_lora` are loaded.

`GET /metrics` reports `vllm:num_requests_waiting`, `vllm:num_requests_running`,
`vllm:kv_cache_usage_perc`, `vllm:lora_requests_info{running_lora_adapters,max_lora}` and the prefix
cache's counters; `GET /health` answers 200. Every answer names its endpoint (`x-pool-endpoint`).

The control port (`--port`) answers `GET /health`, `GET /pool` (the endpoints' addresses and what
each served), and `POST /pool/<name>` with a JSON object changing that endpoint: any parameter
above, `"health": 503`, `"metrics": "ok" | "broken" | "error"`, `"report_waiting": 10` (metrics
claim a queue it does not have), `"loras": ["sql"]`, `"flush_cache": true` (empties the prefix cache).

Run: python -m harness.vllm_pool --port 18090 [--endpoints 3] [--profile bench]
"""

import argparse
import asyncio
import hashlib
import json
import time
from collections import OrderedDict

from aiohttp import web

BLOCK_CHARS = 64
BASE_MODEL = "llama-3.1-8b"


class Endpoint:
    def __init__(self, name, **params):
        self.name = name
        self.address = None
        self.slots = 4
        self.kv_tokens = 6000
        self.prefill_ms_per_token = 0.05
        self.decode_ms_per_token = 2.0
        self.batch_slowdown = 0.15
        self.prefix_blocks = 2000
        self.max_lora = 2
        self.lora_load_ms = 200
        self.slow = 1.0
        self.health = 200
        self.metrics = "ok"
        self.report_waiting = None
        self.loras = OrderedDict()
        self.cache = OrderedDict()
        self.update(params)
        self.waiting = []          # futures, in arrival order, with their KV need
        self.running = 0
        self.kv_used = 0
        self.served = 0
        self.prefix_hits = 0
        self.prefix_queries = 0
        self.lora_loads = 0

    def update(self, params):
        for key, value in params.items():
            if key == "loras":
                self.loras = OrderedDict((name, True) for name in value)
            elif key == "flush_cache":
                if value:
                    self.cache.clear()
            elif hasattr(self, key):
                setattr(self, key, value)
            else:
                raise ValueError(f"no parameter {key}")

    # --- the scheduler ---------------------------------------------------------------------
    def admit(self):
        while self.waiting and self.running < self.slots:
            future, need = self.waiting[0]
            if self.kv_used + need > self.kv_tokens and self.running > 0:
                break
            self.waiting.pop(0)
            self.running += 1
            self.kv_used += need
            if not future.done():
                future.set_result(None)

    async def run(self, prompt, model, out_tokens, first_token):
        """Serves one request; `first_token` is awaited when its prefill is done."""
        prompt_tokens = len(prompt) // 4 + 1
        need = prompt_tokens + out_tokens
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((future, need))
        self.admit()
        await future
        try:
            wait_ms = 0.0
            if model != BASE_MODEL:
                if model in self.loras:
                    self.loras.move_to_end(model)
                else:
                    self.lora_loads += 1
                    wait_ms += self.lora_load_ms
                    self.loras[model] = True
                    while len(self.loras) > self.max_lora:
                        self.loras.popitem(last=False)
            blocks = [hashlib.sha1(prompt[:end].encode()).hexdigest()
                      for end in range(BLOCK_CHARS, len(prompt) + 1, BLOCK_CHARS)]
            hit = 0
            for block in blocks:
                if block not in self.cache:
                    break
                hit += 1
            self.prefix_queries += len(blocks)
            self.prefix_hits += hit
            cached = min(prompt_tokens, hit * BLOCK_CHARS // 4)
            batch = 1 + self.batch_slowdown * max(0, self.running - 1)
            prefill_ms = (prompt_tokens - cached) * self.prefill_ms_per_token * self.slow * batch + wait_ms
            await asyncio.sleep(prefill_ms / 1000)
            await first_token(cached, prompt_tokens)
            decode_ms = out_tokens * self.decode_ms_per_token * self.slow * batch
            await asyncio.sleep(decode_ms / 1000)
            for block in blocks:
                self.cache[block] = True
                self.cache.move_to_end(block)
            while len(self.cache) > self.prefix_blocks:
                self.cache.popitem(last=False)
            self.served += 1
            return prompt_tokens, cached
        finally:
            self.running -= 1
            self.kv_used -= need
            self.admit()

    # --- HTTP ------------------------------------------------------------------------------
    def metrics_text(self):
        waiting = self.report_waiting if self.report_waiting is not None else len(self.waiting)
        labels = f'model_name="{BASE_MODEL}"'
        adapters = ",".join(self.loras)
        return "\n".join([
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(self.running)}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} {self.kv_used / self.kv_tokens:.4f}",
            "# TYPE vllm:lora_requests_info gauge",
            f'vllm:lora_requests_info{{max_lora="{self.max_lora}",running_lora_adapters="{adapters}",'
            f'waiting_lora_adapters=""}} {time.time():.3f}',
            f"vllm:prefix_cache_queries_total{{{labels}}} {float(self.prefix_queries)}",
            f"vllm:prefix_cache_hits_total{{{labels}}} {float(self.prefix_hits)}",
            "",
        ])

    def app(self):
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_get("/metrics", self.on_metrics)
        application.router.add_get("/health", self.on_health)
        application.router.add_post("/v1/chat/completions", self.on_chat)
        return application

    async def on_metrics(self, _request):
        if self.metrics == "error":
            return web.Response(status=500, text="internal error")
        if self.metrics == "broken":
            return web.Response(text="<html>not metrics</html>", content_type="text/html")
        return web.Response(text=self.metrics_text(), content_type="text/plain")

    async def on_health(self, _request):
        return web.Response(status=self.health, text="")

    async def on_chat(self, request):
        body = await request.json()
        messages = body.get("messages") or []
        parts = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
        prompt = "\n".join(parts)
        model = body.get("model") or BASE_MODEL
        out_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        headers = {"x-pool-endpoint": self.name}
        answer = f"Answered by {self.name}."
        started = time.time()
        if not body.get("stream"):
            prompt_tokens, cached = await self.run(prompt, model, out_tokens, first_token=lambda *_: asyncio.sleep(0))
            return web.json_response(chat_answer(model, answer, prompt_tokens, out_tokens, cached, started),
                                     headers=headers)
        response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
        await response.prepare(request)

        async def first_token(_cached, _prompt_tokens):
            await response.write(sse({"id": "chatcmpl-pool", "object": "chat.completion.chunk", "created": int(started),
                                      "model": model, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                                          "content": answer}}]}))

        prompt_tokens, cached = await self.run(prompt, model, out_tokens, first_token)
        final = {"id": "chatcmpl-pool", "object": "chat.completion.chunk", "created": int(started), "model": model,
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(sse(final))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(sse({"id": "chatcmpl-pool", "object": "chat.completion.chunk", "model": model,
                                      "choices": [], "usage": usage(prompt_tokens, out_tokens, cached)}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def report(self):
        return {"name": self.name, "address": self.address, "served": self.served, "prefix_hits": self.prefix_hits,
                "prefix_queries": self.prefix_queries, "lora_loads": self.lora_loads, "loras": list(self.loras),
                "waiting": len(self.waiting), "running": self.running}


def usage(prompt_tokens, out_tokens, cached):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens, "total_tokens": prompt_tokens + out_tokens,
            "prompt_tokens_details": {"cached_tokens": cached}}


def chat_answer(model, text, prompt_tokens, out_tokens, cached, started):
    return {"id": "chatcmpl-pool", "object": "chat.completion", "created": int(started), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage(prompt_tokens, out_tokens, cached)}


def sse(data) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


# Heterogeneous on purpose: one endpoint slower, adapters loaded unevenly.
PROFILES = {
    "test": [{"loras": []}, {"loras": ["sql-lora"]}, {"loras": []}],
    "bench": [{"loras": ["sql-lora"], "max_lora": 1, "prefix_blocks": 90},
              {"loras": ["chat-lora"], "max_lora": 1, "prefix_blocks": 90},
              {"loras": ["code-lora"], "max_lora": 1, "prefix_blocks": 90, "slow": 1.6}],
}


async def serve(port, count, profile):
    specs = PROFILES[profile]
    endpoints = [Endpoint(f"vllm-{i}", **(specs[i] if i < len(specs) else {})) for i in range(count)]
    runners = []
    for endpoint in endpoints:
        runner = web.AppRunner(endpoint.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sock_port = site._server.sockets[0].getsockname()[1]
        endpoint.address = f"127.0.0.1:{sock_port}"
        runners.append(runner)
    by_name = {e.name: e for e in endpoints}

    async def health(_request):
        return web.Response(text="ok")

    async def pool(_request):
        return web.json_response({"endpoints": [e.report() for e in endpoints]})

    async def change(request):
        endpoint = by_name.get(request.match_info["name"])
        if endpoint is None:
            return web.json_response({"error": "no such endpoint"}, status=404)
        try:
            endpoint.update(await request.json())
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(endpoint.report())

    control = web.Application()
    control.router.add_get("/health", health)
    control.router.add_get("/pool", pool)
    control.router.add_post("/pool/{name}", change)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="test")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.endpoints, arguments.profile))


if __name__ == "__main__":
    main()
