"""`make run`: the Sluice gateway on 127.0.0.1:10000 (admin 127.0.0.1:9901) with every module,
Redis + webdis and the mock provider. With OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or AWS_BEARER_TOKEN_BEDROCK set, those
providers are the real APIs instead. Ctrl-C stops everything.
"""

import os
import signal
import sys
import time

from .stack import DEMO_KEY, Stack, key_entry

LISTEN_PORT = int(os.environ.get("SLUICE_PORT", "10000"))
ADMIN_PORT = int(os.environ.get("SLUICE_ADMIN_PORT", "9901"))


# The demo key and the limits `make run` enforces on it (the budget enforcer's config).
DEMO_BUDGET = {
    "keys": [key_entry(DEMO_KEY, "demo", team="demo", user="you")],
    # Keys can also be added to Redis and revoked there (the banner shows how).
    "redis_keys": {"enabled": True},
    "limits": [
        {"name": "demo-rpm", "scope": "key", "kind": "requests", "window": "minute", "limit": 60},
        {"name": "demo-daily-usd", "scope": "key", "kind": "usd", "window": "day", "limit": 1.0, "alert_at": 0.8},
        {"name": "demo-hourly-tokens", "scope": "team", "kind": "tokens", "window": "hour", "limit": 200000},
    ],
    # The logical models below have no price of their own: the dollar limit counts them at
    # gpt-4o's, rather than refusing them (no model is free against a USD limit).
    "unpriced": {"price": {"input": 2.5, "output": 10.0}},
    # JWTs beside keys: tokens of the run's own issuer (the banner prints one) that Envoy's
    # jwt_authn verified; their `feature` claim attributes their spend.
    "jwt": {"payload_header": "x-sluice-jwt-payload", "team_claim": "team", "metadata_claims": {"feature": "feature"}},
    "dimensions": {"feature": {"header": "x-sluice-feature", "trusted": {"teams": ["demo"]}, "metadata": "feature"}},
}

# Logical models `make run` serves (the model rewriter's config); any other model name gets 404.
DEMO_MODELS = {
    "models": {
        "gpt-4o": {"targets": [{"provider": "openai", "model": "gpt-4o", "cluster": "provider_openai"}]},
        "gpt-4o-mini": {"targets": [{"provider": "openai", "model": "gpt-4o-mini", "cluster": "provider_openai"}]},
        "claude-haiku-4-5": {"targets": [{"provider": "anthropic", "model": "claude-haiku-4-5",
                                                 "cluster": "provider_anthropic"}]},
        "chat-fast": {"targets": [{"provider": "openai", "model": "gpt-4o-mini", "cluster": "provider_openai"}]},
        "chat-claude": {"targets": [{"provider": "anthropic", "model": "claude-haiku-4-5",
                                     "cluster": "provider_anthropic"}]},
        "gemini-flash": {"targets": [{"provider": "gemini", "model": "gemini-2.5-flash", "cluster": "provider_gemini"}]},
        "bedrock-haiku": {"targets": [{"provider": "bedrock", "model": "anthropic.claude-3-5-haiku-20241022-v1:0",
                                       "cluster": "provider_bedrock"}]},
        # OpenAI first; Anthropic when OpenAI fails (envoy-config/gateway.yaml: chain_openai_anthropic).
        "chat-quality": {"targets": [{"provider": "openai", "model": "gpt-4o", "cluster": "chain_openai_anthropic"}],
                         "fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]},
        # The seed's chain: OpenAI, Anthropic, Gemini, then gpt-4o-mini (envoy-config/gateway.yaml: chain_seed).
        "chat-resilient": {"targets": [{"provider": "openai", "model": "gpt-4o", "cluster": "chain_seed"}],
                           "fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4-6"},
                                         {"provider": "gemini", "model": "gemini-2.5-flash"},
                                         {"provider": "openai_last", "model": "gpt-4o-mini"}]},
    },
}



def demo_models(stack) -> dict:
    """The logical models, with the simulated vLLM pool's (its endpoints are known once it runs)."""
    pool = {"provider": "vllm", "cluster": "pool_vllm", "pool": "vllm"}
    return {
        **DEMO_MODELS,
        "models": {**DEMO_MODELS["models"],
                   "llama": {"targets": [{**pool, "model": "llama-3.1-8b"}]},
                   "sql-assistant": {"targets": [{**pool, "model": "sql-lora"}]}},
        "pools": {"vllm": {"endpoints": stack.pool_endpoints}},
    }


# Guard services: the mock provider's scripted moderation service on prompts (before the cache)
# and answers (after it, streams held back until checked).
DEMO_MODERATION = {"name": "moderation", "kind": "moderation", "cluster": "guard_services", "authority": "guards",
                   "categories": {"violence": {"threshold": 0.8, "action": "block"},
                                  "harassment": {"threshold": 0.5, "action": "flag"}}, "default_action": "off"}
# Prompt injection by likeness to known attacks, through the reference embedder (flagged only; its
# embedding of the last user turn is the one the cache uses).
DEMO_INJECTION = {"name": "injection", "kind": "similarity", "cluster": "embedder", "authority": "embedder",
                  "model": "all-MiniLM-L6-v2", "check": ["prompt"], "on_error": "open",
                  "categories": {"prompt_injection": {"threshold": 0.45, "action": "flag"}}}
DEMO_GUARDS = {"sluice.guard": {"guards": [{**DEMO_MODERATION, "check": ["prompt"]}, DEMO_INJECTION]},
               "sluice.guard_answers": {"guards": [{**DEMO_MODERATION, "check": ["answer"]}]}}

# The semantic cache with its defaults (per-team entries, threshold 0.85, one hour).
DEMO_CACHE = {}


def curl_lines(stack, real):
    base = stack.url("")
    model = "gpt-4o-mini" if real.get("openai") or not real else "gpt-4o"
    # The mock can be told to fail the primary; real providers fail on their own.
    fail_primary = "" if real else "-H 'x-mock-fail-model: gpt-4o=503' "
    fail_three = "" if real else "-H 'x-mock-fail-model: gpt-4o=503,claude-sonnet-4-6=503,gemini-2.5-flash=429' "
    # The mock answers with the placeholder it received, as a model would repeat it.
    echo_placeholder = "" if real else "-H 'x-mock-text: I will write to <EMAIL_1>.' "
    return f"""
Sluice gateway is up: {base}  (admin {stack.admin("")})
Providers: OpenAI -> {"api.openai.com" if real.get("openai") else "mock"}, Anthropic -> {"api.anthropic.com" if real.get("anthropic") else "mock"}

Demo virtual key: {DEMO_KEY}  (60 requests/minute, $1/day, 200k tokens/hour for its team)

Try:
  curl -si {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    -d '{{"model":"{model}","messages":[{{"role":"user","content":"What is the capital of France?"}}]}}'

  curl -sN {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    -d '{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"Count to five."}}]}}'

  curl -s {base}/v1/messages -H 'x-api-key: {DEMO_KEY}' -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \\
    -d '{{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{{"role":"user","content":"Hi"}}]}}'

  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    -d '{{"model":"chat-claude","messages":[{{"role":"user","content":"Hi"}}]}}'   # OpenAI in, Anthropic behind

  curl -sN '{base}/v1beta/models/chat-claude:streamGenerateContent?alt=sse' -H 'x-goog-api-key: {DEMO_KEY}' \\
    -H 'content-type: application/json' -d '{{"contents":[{{"role":"user","parts":[{{"text":"Hi"}}]}}]}}'   # Gemini in (google-genai), Anthropic behind

  curl -si {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    {fail_primary}-d '{{"model":"chat-quality","messages":[{{"role":"user","content":"Hi"}}]}}'   # fallback: see x-sluice-provider

  curl -si {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    {fail_three}-d '{{"model":"chat-resilient","messages":[{{"role":"user","content":"Hi"}}]}}'   # OpenAI, Anthropic, Gemini, then gpt-4o-mini

  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\
    {echo_placeholder}-d '{{"model":"{model}","messages":[{{"role":"user","content":"Write to jane@example.com"}}]}}'   # the provider sees <EMAIL_1>, you see the address

  curl -s {base}/v1/models -H 'authorization: Bearer {DEMO_KEY}'   # the logical models

  curl -s {base}/v1/chat/completions -d '{{}}'     # no key: 401

  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \
    -d '{{"model":"gpt-4o-minii","messages":[{{"role":"user","content":"Hi"}}]}}'   # a typo'd model: 404

A JWT instead of a key (signed by this run's own issuer, valid for an hour), and a feature the
demo team may name (the access log's `feature`, the `feature` label of the cost metrics):
  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {stack.issuer.token({"sub": "you", "team": "demo", "feature": "search"}, ttl_s=3600)}' \
    -H 'content-type: application/json' -d '{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}]}}'
  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'x-sluice-feature: summaries' \
    -H 'content-type: application/json' -d '{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}]}}'

A key of your own, kept in Redis (no config push), then revoked:
  redis-cli -p {stack.redis_port} SET sluice:key:$(printf %s sk-mine | sha256sum | cut -c1-64) '{{"alias":"mine","team":"demo"}}'
  curl -s {base}/v1/chat/completions -H 'authorization: Bearer sk-mine' -H 'content-type: application/json' \
    -d '{{"model":"{model}","messages":[{{"role":"user","content":"Hi"}}]}}'
  redis-cli -p {stack.redis_port} DEL sluice:key:$(printf %s sk-mine | sha256sum | cut -c1-64)   # 401 again within 10 s

Guard services (the mock's scripted moderation reads [[score:category=value]] markers): a prompt
it scores violent gets 400 content_filter; an answer it scores violent ends with content_filter:
  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \
    -d '{{"model":"{model}","messages":[{{"role":"user","content":"Hurt them [[score:violence=0.93]]"}}]}}'
  curl -s {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \
    -H 'x-mock-text: Violent%20text%20%5B%5Bscore%3Aviolence%3D0.9%5D%5D' \
    -d '{{"model":"{model}","messages":[{{"role":"user","content":"Tell me a story"}}]}}'

Semantic cache: ask, then paraphrase; the second answer comes from Redis (x-sluice-cache: hit):
  curl -si {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \
    -d '{{"model":"{model}","messages":[{{"role":"user","content":"Tell me the capital city of France"}}]}}' | grep -i x-sluice-cache

A simulated vLLM pool of 3 endpoints (pool_vllm): the rewriter picks each request's endpoint from
their scraped metrics; x-sluice-endpoint says which answered. The LoRA adapter sql-lora is loaded
on one of them, so `sql-assistant` always goes there:
  curl -si {base}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \
    -d '{{"model":"sql-assistant","messages":[{{"role":"user","content":"Count the orders per customer"}}]}}' | grep -i x-sluice-endpoint
  curl -s http://127.0.0.1:{stack.pool_port}/pool   # what each endpoint served

The reference embedding service (all-MiniLM-L6-v2, for the semantic cache):
  curl -s http://127.0.0.1:{stack.embedder_port}/v1/embeddings -d '{{"input":"What is the capital of France?"}}'

Then see tokens, cost and budgets:
  curl -s {stack.admin("/stats/prometheus")} | grep ^sluice_
Access log (one JSON line per request): {stack.workdir / "access.log"}
Envoy log: {stack.workdir / "envoy.log"}

Ctrl-C stops everything.
"""


def main():
    real = {k: v for k, v in {"openai": os.environ.get("OPENAI_API_KEY"),
                              "anthropic": os.environ.get("ANTHROPIC_API_KEY"),
                              "gemini": os.environ.get("GEMINI_API_KEY"),
                              "bedrock": os.environ.get("AWS_BEARER_TOKEN_BEDROCK")}.items() if v}
    configs = {"sluice.budget_enforcer": DEMO_BUDGET, "sluice.model_rewriter": demo_models,
               "sluice.semantic_cache": DEMO_CACHE, **DEMO_GUARDS}
    stack = Stack(configs=configs,
                  listen_port=LISTEN_PORT, admin_port=ADMIN_PORT, real_providers=real, with_embedder=True,
                  with_pool=True)
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(curl_lines(stack, real), flush=True)
        while not stop["now"]:
            for name, proc in stack.procs.items():
                if not proc.alive():
                    print(f"{name} exited:\n{proc.log()[-2000:]}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
