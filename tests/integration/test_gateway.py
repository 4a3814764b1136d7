"""`make run`'s launcher: starts everything, serves a counted chat completion, stops on Ctrl-C; and
the chain runs in the VMs its build promises."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import requests

from harness.procs import free_port, wait_until
from harness import stack
from harness.stack import ROOT, Stack, sum_samples


def test_run_serves_a_counted_completion_and_stops_on_ctrl_c(tmp_path):
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in stack.PROVIDER_KEY_VARIABLES}
    env.update(SLUICE_PORT=str(port), SLUICE_ADMIN_PORT=str(admin))
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness.gateway"], cwd=ROOT / "tests", env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "Ctrl-C stops everything" in log.read_text(), "the gateway banner", 90)
        banner = log.read_text()
        assert f"http://127.0.0.1:{port}/v1/chat/completions" in banner
        key = re.search(r"Demo virtual key: (\S+)", banner).group(1)
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert requests.post(url, json=chat).status_code == 401
        r = requests.post(url, json=chat, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "60"
        claude = requests.post(url, headers={"authorization": f"Bearer {key}"},
                               json={"model": "chat-claude", "messages": [{"role": "user", "content": "Hi"}]})
        assert claude.status_code == 200 and claude.json()["object"] == "chat.completion"
        # The banner's JWT line: the run's own issuer signed it; the gateway takes it for a key.
        token = re.search(r"authorization: Bearer (eyJ[\w-]+\.[\w-]+\.[\w-]+)'", banner).group(1)
        jwt = requests.post(url, json=chat, headers={"authorization": f"Bearer {token}"})
        assert jwt.status_code == 200, jwt.text
        forged = token.rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
        assert requests.post(url, json=chat, headers={"authorization": f"Bearer {forged}"}).status_code == 401
        # The banner's Gemini-client line: a Gemini stream, answered by Anthropic.
        assert "/v1beta/models/chat-claude:streamGenerateContent?alt=sse' -H 'x-goog-api-key" in banner
        gemini_client = requests.post(url.replace("/v1/chat/completions", "/v1beta/models/chat-claude:streamGenerateContent"),
                                      params={"alt": "sse"}, headers={"x-goog-api-key": key},
                                      json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
        assert gemini_client.status_code == 200 and gemini_client.headers["x-sluice-provider"] == "anthropic"
        chunks = [json.loads(line[6:]) for line in gemini_client.text.splitlines() if line.startswith("data: ")]
        assert chunks and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        # The banner's fallback line: OpenAI fails, Anthropic answers in OpenAI's shape.
        assert "x-mock-fail-model: gpt-4o=503" in banner
        quality = requests.post(url, headers={"authorization": f"Bearer {key}", "x-mock-fail-model": "gpt-4o=503"},
                                json={"model": "chat-quality", "messages": [{"role": "user", "content": "Hi"}]})
        assert quality.status_code == 200 and quality.headers["x-sluice-provider"] == "anthropic"
        assert quality.json()["model"] == "claude-sonnet-4-6"
        # The banner's seed-chain line: three providers fail, the last resort answers.
        three = "gpt-4o=503,claude-sonnet-4-6=503,gemini-2.5-flash=429"
        assert f"x-mock-fail-model: {three}" in banner and "chat-resilient" in banner
        resilient = requests.post(url, headers={"authorization": f"Bearer {key}", "x-mock-fail-model": three},
                                  json={"model": "chat-resilient", "messages": [{"role": "user", "content": "Hi"}]})
        assert resilient.status_code == 200, resilient.text
        assert (resilient.headers["x-sluice-provider"], resilient.json()["model"]) == ("openai_last", "gpt-4o-mini")
        # Two fail: Gemini answers, in OpenAI's shape (another question: the cache has the first).
        gemini = requests.post(url, headers={"authorization": f"Bearer {key}",
                                             "x-mock-fail-model": "gpt-4o=503,claude-sonnet-4-6=503"},
                               json={"model": "chat-resilient", "messages": [{"role": "user", "content": "Hello?"}]})
        assert (gemini.headers["x-sluice-provider"], gemini.json()["object"]) == ("gemini", "chat.completion")
        # The banner's PII line: the provider sees a placeholder, the client the address.
        assert "x-mock-text: I will write to <EMAIL_1>." in banner
        pii = requests.post(url, headers={"authorization": f"Bearer {key}", "x-mock-text": "I will write to <EMAIL_1>."},
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write to jane@example.com"}]})
        assert pii.json()["choices"][0]["message"]["content"] == "I will write to jane@example.com."
        # The banner's guard lines: a prompt the moderation scores violent is refused, an answer withheld.
        assert "Hurt them [[score:violence=0.93]]" in banner
        hurt = requests.post(url, headers={"authorization": f"Bearer {key}"},
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hurt them [[score:violence=0.93]]"}]})
        assert hurt.status_code == 400 and hurt.json()["error"]["code"] == "content_filter"
        story = requests.post(url, headers={"authorization": f"Bearer {key}",
                                            "x-mock-text": "Violent%20text%20%5B%5Bscore%3Aviolence%3D0.9%5D%5D"},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me a story"}]})
        assert story.json()["choices"][0]["finish_reason"] == "content_filter"
        # The banner's pool line: the LoRA adapter's requests go to the endpoint that has it loaded.
        assert "sql-assistant" in banner and "grep -i x-sluice-endpoint" in banner
        pool_url = re.search(r"curl -s (http://127\.0\.0\.1:\d+/pool)", banner).group(1)
        loaded = next(e for e in requests.get(pool_url).json()["endpoints"] if "sql-lora" in e["loras"])
        time.sleep(1)
        for table in ["orders", "invoices", "refunds"]:  # distinct: the demo's semantic cache is on
            sql = requests.post(url, headers={"authorization": f"Bearer {key}"},
                                json={"model": "sql-assistant",
                                      "messages": [{"role": "user", "content": f"Count the {table} per customer"}]})
            assert sql.status_code == 200 and sql.headers["x-sluice-endpoint"] == loaded["address"], sql.headers
        # The banner's typo line: an unknown model is 404, never sent on.
        assert "gpt-4o-minii" in banner
        typo = requests.post(url, headers={"authorization": f"Bearer {key}"},
                             json={"model": "gpt-4o-minii", "messages": [{"role": "user", "content": "Hi"}]})
        assert typo.status_code == 404 and typo.json()["error"]["code"] == "model_not_found"
        # The banner's Redis key lines: add a key, use it, revoke it.
        redis_port = re.search(r"redis-cli -p (\d+) SET", banner).group(1)
        digest = hashlib.sha256(b"sk-mine").hexdigest()
        redis = ["redis-cli", "-p", redis_port]
        subprocess.run([*redis, "SET", f"sluice:key:{digest}", '{"alias":"mine","team":"demo"}'], check=True,
                       capture_output=True)
        mine = {"authorization": "Bearer sk-mine"}
        assert requests.post(url, json=chat, headers=mine).status_code == 200
        subprocess.run([*redis, "DEL", f"sluice:key:{digest}"], check=True, capture_output=True)
        wait_until(lambda: requests.post(url, json=chat, headers=mine).status_code == 401, "the revoked key refused", 30)
        # The banner's embedding line: a real 384-dimension embedding.
        embed_url = re.search(r"curl -s (http://127.0.0.1:\d+/v1/embeddings)", banner).group(1)
        vector = requests.post(embed_url, json={"input": "Hi"}).json()["data"][0]["embedding"]
        assert len(vector) == 384
        time.sleep(1.2)  # stats flush
        metrics = requests.get(f"http://127.0.0.1:{admin}/stats/prometheus").text
        labels = {"model": "gpt-4o", "provider": "openai", "team": "demo"}
        assert sum_samples(metrics, "sluice_tokens_total", {**labels, "direction": "input"}) == 21
        # The fallback's tokens belong to the provider and model that answered.
        fallback = {"model": "claude-sonnet-4-6", "provider": "anthropic", "team": "demo", "direction": "input"}
        assert sum_samples(metrics, "sluice_tokens_total", fallback) == 21
        assert sum_samples(metrics, "sluice_cost_micro_usd_total", labels) > 0
        workdir = re.search(r"Envoy log: (\S+)/envoy.log", banner).group(1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    assert "stopped" in log.read_text()
    time.sleep(0.2)
    leftovers = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True).stdout.strip()
    assert leftovers == "", "every process of the run stopped"


def test_the_chain_runs_in_the_vms_its_build_promises():
    """Envoy keeps one VM per worker, plus two on the main thread, for each distinct module: seven
    single modules at two workers are 28 VMs (the two guard filters load one module with one
    vm_config and share theirs), the bundle (SLUICE_BUNDLE=1, plugins/bundle) is 4. So the bundle
    pass of `make test` runs the bundle, and the bundle shares its VMs."""
    with Stack(concurrency=2, with_embedder=False) as s:
        stats = s.get_text(s.admin("/stats?filter=wasm.envoy.wasm.runtime.v8.active"))
        active = int(stats.split(":")[-1])
        assert active == (4 if stack.BUNDLED else 7 * 4), stats
        assert s.vm_failures() == []
