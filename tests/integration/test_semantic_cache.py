"""The semantic cache inside a real Envoy, with real Redis + webdis and the reference embedding
service (all-MiniLM-L6-v2): exact and paraphrased repeats, what never matches, tenants, streams
replayed to the official `openai` SDK, TTLs, Cache-Control, what is never stored, each
dependency down, and bad inputs."""

import json
import time

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as genai_types
import requests

from harness.procs import wait_until
from harness.client import post
from harness.stack import DEMO_KEY, Stack, assert_config_rejected, key_entry, running

CHAT = "/v1/chat/completions"
OTHER_TEAM_KEY, NO_TEAM_KEY, SAME_TEAM_KEY = "sk-other-team", "sk-no-team", "sk-demo-teammate"
KEYS = {"keys": [key_entry(DEMO_KEY, "demo", team="demo"), key_entry(SAME_TEAM_KEY, "mate", team="demo"),
                 key_entry(OTHER_TEAM_KEY, "other", team="other"), key_entry(NO_TEAM_KEY, "solo")]}
CACHE = {
    "routes": [
        {"models": ["short-ttl-*"], "ttl_seconds": 1},
        {"models": ["strict-*"], "threshold": 0.99},
        {"models": ["exact-*"], "mode": "exact"},
        {"path_prefix": "/nocache/"}, {"models": ["never-*"], "mode": "off"},
    ],
}


@pytest.fixture(scope="module")
def gateway():
    yield from running(configs={"sluice.budget_enforcer": KEYS, "sluice.semantic_cache": CACHE}, with_embedder=True)


@pytest.fixture(autouse=True)
def empty_cache(request):
    if "gateway" in request.fixturenames:
        request.getfixturevalue("gateway").redis("FLUSHALL")


def ask(stack, content, model="gpt-4o-mini", key=DEMO_KEY, headers=None, system=None, **extra):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return requests.post(stack.url(CHAT), json={"model": model, "messages": messages, **extra}, timeout=30,
                         headers={"authorization": f"Bearer {key}", **(headers or {})})


def provider_calls(stack) -> int:
    return len(requests.get(stack.mock("/mock/requests")).json())


def text(response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def wait_stored(stack, count=1):
    """Waits until `count` answers are in Redis (stores are sent as answers end)."""
    wait_until(lambda: len(stack.redis("KEYS", "sluice:cache:*:x:*").split()) >= count or None, f"{count} answers stored")


def stored(stack, first):
    """Asks `first` (a miss, answered with a text of its own) and waits until its answer is stored."""
    answer = ask(stack, first, headers={"x-mock-text": f"answer to {first}"})
    assert answer.status_code == 200 and answer.headers["x-sluice-cache"] == "miss", answer.headers
    wait_stored(stack)
    return answer


def test_exact_repeat_is_served_from_redis(gateway):
    stored(gateway, "What is the boiling point of water at sea level?")
    calls = provider_calls(gateway)
    again = ask(gateway, "What is the boiling point of water at sea level?", temperature=None)
    # Same request, members in another order and delivery-only fields added: the same entry.
    reordered = requests.post(gateway.url(CHAT), timeout=30, headers={"authorization": f"Bearer {DEMO_KEY}"},
                              data=json.dumps({"user": "u-42", "messages": [{"content": "What is the boiling point of "
                                               "water at sea level?", "role": "user"}], "model": "gpt-4o-mini"}))
    assert reordered.headers["x-sluice-cache"] == "hit"
    assert reordered.headers["x-sluice-cache-similarity"] == "1.0000"
    assert text(reordered) == "answer to What is the boiling point of water at sea level?"
    assert reordered.json()["object"] == "chat.completion"
    # Nothing was generated or billed: zero usage; what the stored answer cost is in headers.
    usage = reordered.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (0, 0, 0)
    assert (reordered.headers["x-sluice-cache-prompt-tokens"], reordered.headers["x-sluice-cache-completion-tokens"]) \
        == ("21", "7")
    assert again.headers["x-sluice-cache"] == "miss"  # `temperature: null` is another request
    assert provider_calls(gateway) == calls + 1


def test_paraphrase_hits_and_unrelated_questions_miss(gateway):
    stored(gateway, "What is the capital of France?")
    calls = provider_calls(gateway)
    hit = ask(gateway, "Tell me the capital city of France")
    assert hit.status_code == 200, hit.text
    assert hit.headers["x-sluice-cache"] == "hit", hit.headers
    similarity = float(hit.headers["x-sluice-cache-similarity"])
    assert 0.85 <= similarity < 1.0
    assert text(hit) == "answer to What is the capital of France?"
    assert provider_calls(gateway) == calls
    # Close in embedding space, but another question: the guard turns it down.
    for other in ["What is the capital of Germany?", "How do I bake sourdough bread?"]:
        miss = ask(gateway, other)
        assert miss.headers["x-sluice-cache"] == "miss", other
        assert text(miss) != "answer to What is the capital of France?"
    assert provider_calls(gateway) == calls + 2
    line = wait_until(lambda: next((l for l in reversed(gateway.access_log()) if l["cache_reason"] == "semantic"), None),
                      "the hit's log line")
    assert line["cache"] == "hit" and float(line["cache_similarity"]) == similarity
    assert int(line["cache_embedding_ms"]) >= 0 and int(line["cache_lookup_ms"]) >= int(line["cache_embedding_ms"])
    assert gateway.metric("sluice_cache_lookups_total", status="hit", reason="semantic") >= 1
    assert gateway.metric("sluice_cache_lookups_total", status="miss", reason="none") >= 3
    # Histograms reach the admin endpoint at Envoy's stats flush (every 5 s).
    wait_until(lambda: gateway.metric("sluice_cache_embedding_ms_count") >= 1 or None, "embedding histogram", 15)


def test_models_system_prompts_and_tenants_never_share_entries(gateway):
    stored(gateway, "What is the capital of France?")
    assert ask(gateway, "What is the capital of France?", key=SAME_TEAM_KEY).headers["x-sluice-cache"] == "hit"
    for response in [
        ask(gateway, "What is the capital of France?", model="gpt-4o"),
        ask(gateway, "What is the capital of France?", system="Answer in French."),
        ask(gateway, "What is the capital of France?", key=OTHER_TEAM_KEY),
        ask(gateway, "What is the capital of France?", key=NO_TEAM_KEY),
        ask(gateway, "What is the capital of France?", max_tokens=5),
    ]:
        assert response.status_code == 200 and response.headers["x-sluice-cache"] == "miss", response.request.body
    assert any(k.startswith("sluice:cache:key:solo:") for k in gateway.redis("KEYS", "sluice:cache:*").split())


def test_a_contradicted_paraphrase_hit_makes_its_entry_stricter_then_evicts_it(gateway):
    question, paraphrase = "What is the capital of France?", "Tell me the capital city of France"
    stored(gateway, question)
    hit = ask(gateway, paraphrase)
    assert hit.headers["x-sluice-cache"] == "hit"
    entry = hit.headers["x-sluice-cache-entry"]
    assert len(entry) == 32 and float(hit.headers["x-sluice-cache-similarity"]) < 0.95
    calls = provider_calls(gateway)
    count = {d: gateway.metric("sluice_cache_wrong_total", decision=d) for d in ["stricter", "evicted"]}
    # The client says the answer was wrong and asks again: a fresh answer, nothing looked up.
    wrong = {"x-sluice-cache-wrong": entry, "cache-control": "no-store"}
    complaint = ask(gateway, paraphrase, headers=wrong)
    assert complaint.status_code == 200
    assert (complaint.headers["x-sluice-cache"], complaint.headers["x-sluice-cache-reason"]) == ("bypass", "wrong")
    assert provider_calls(gateway) == calls + 1
    assert gateway.metric("sluice_cache_wrong_total", decision="stricter") == count["stricter"] + 1
    # Now the entry answers paraphrases only at 0.95 and above; exact repeats still.
    assert ask(gateway, paraphrase, headers={"cache-control": "no-store"}).headers["x-sluice-cache"] == "miss"
    assert ask(gateway, question).headers["x-sluice-cache"] == "hit"
    # A second contradiction evicts it.
    assert ask(gateway, paraphrase, headers=wrong).headers["x-sluice-cache-reason"] == "wrong"
    assert gateway.metric("sluice_cache_wrong_total", decision="evicted") == count["evicted"] + 1
    assert ask(gateway, question, headers={"cache-control": "no-store"}).headers["x-sluice-cache"] == "miss"


def test_a_contradicted_exact_hit_evicts_at_once_and_only_in_its_namespace(gateway):
    question = "How many moons does Mars have?"
    stored(gateway, question)
    entry = ask(gateway, question).headers["x-sluice-cache-entry"]
    count = {d: gateway.metric("sluice_cache_wrong_total", decision=d) for d in ["unknown", "evicted"]}
    # Another team cannot touch this team's entries: the same id names nothing in its namespace.
    other = ask(gateway, question, key=OTHER_TEAM_KEY, headers={"x-sluice-cache-wrong": entry, "cache-control": "no-store"})
    assert other.headers["x-sluice-cache-reason"] == "wrong"
    assert gateway.metric("sluice_cache_wrong_total", decision="unknown") == count["unknown"] + 1
    assert ask(gateway, question).headers["x-sluice-cache"] == "hit"
    # Not an entry id: ignored, the request is looked up as usual.
    assert ask(gateway, question, headers={"x-sluice-cache-wrong": "it was wrong"}).headers["x-sluice-cache"] == "hit"
    mine = ask(gateway, question, headers={"x-sluice-cache-wrong": entry.upper(), "cache-control": "no-store"})
    assert mine.headers["x-sluice-cache-reason"] == "wrong"
    assert gateway.metric("sluice_cache_wrong_total", decision="evicted") == count["evicted"] + 1
    assert ask(gateway, question, headers={"cache-control": "no-store"}).headers["x-sluice-cache"] == "miss"
    # The header never reaches the provider.
    sent = requests.get(gateway.mock("/mock/requests")).json()
    assert not any(name.lower().startswith("x-sluice") for r in sent for name in r["headers"])


def test_a_follow_up_never_hits_another_conversations_entry(gateway):
    def conversation(city, follow_up="And in winter?", key=DEMO_KEY, headers=None):
        messages = [{"role": "user", "content": f"What is the weather like in {city} in summer?"},
                    {"role": "assistant", "content": f"{city} is warm in summer."},
                    {"role": "user", "content": follow_up}]
        return requests.post(gateway.url(CHAT), json={"model": "gpt-4o-mini", "messages": messages}, timeout=30,
                             headers={"authorization": f"Bearer {key}", **(headers or {})})

    assert conversation("Paris", headers={"x-mock-text": "Paris in winter"}).headers["x-sluice-cache"] == "miss"
    wait_stored(gateway)
    # The same conversation hits, exactly and paraphrased.
    assert conversation("Paris").headers["x-sluice-cache"] == "hit"
    assert conversation("Paris", follow_up="and in winter").headers["x-sluice-cache"] == "hit"
    # The same follow-up after other turns is another question, however alike the words.
    for city in ["London", "Paris, Texas"]:
        response = conversation(city)
        assert response.headers["x-sluice-cache"] == "miss", city
        assert text(response) != "Paris in winter"


def test_a_hit_replays_as_a_stream_the_openai_sdk_reads(gateway):
    stored(gateway, "Name the largest planet in the solar system.")
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=DEMO_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Name the largest planet in the solar system."}],
        stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-sluice-cache"] == "hit" and raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "answer to Name the largest planet in the solar system."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == 0 and chunks[-1].choices == []
    assert raw.headers["x-sluice-cache-prompt-tokens"] == "21"
    # And a paraphrase, without usage asked for.
    plain = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "name the largest planet in our solar system"}],
        stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices).startswith("answer to Name")
    assert all(c.usage is None for c in plain)


def test_a_streamed_answer_is_stored_and_served_as_json(gateway):
    first = requests.post(gateway.url(CHAT), stream=True, timeout=30,
                          headers={"authorization": f"Bearer {DEMO_KEY}", "x-mock-piece-chars": "3",
                                   "x-mock-chunk-bytes": "7", "x-mock-text": "Streamed%20answer."},
                          json={"model": "gpt-4o-mini", "stream": True,
                                "messages": [{"role": "user", "content": "How many legs does a spider have?"}]})
    assert first.headers["x-sluice-cache"] == "miss"
    assert b"[DONE]" in b"".join(first.iter_content(None))
    wait_stored(gateway, 1)
    hit = ask(gateway, "How many legs does a spider have?")
    assert hit.headers["x-sluice-cache"] == "hit" and text(hit) == "Streamed answer."
    assert hit.headers["content-type"] == "application/json"


# --- every chat schema: the Responses API, Anthropic Messages and Gemini clients hit too ---------

def claude_client(stack):
    return anthropic.Anthropic(base_url=stack.url(""), api_key=DEMO_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("first_stream,then_stream", [(False, False), (True, True), (True, False), (False, True)])
def test_anthropic_clients_hit_exact_and_paraphrased_repeats_in_their_own_schema(gateway, first_stream, then_stream):
    client = claude_client(gateway)
    question = "What is the capital of France?"

    def ask_claude(content, stream, headers=None):
        ask = {"model": "claude-haiku-4-5", "max_tokens": 64, "system": "Be brief.",
               "messages": [{"role": "user", "content": content}], "extra_headers": headers or {}}
        if stream:
            with client.messages.with_streaming_response.create(**ask, stream=True) as raw:
                cache = raw.headers["x-sluice-cache"]
            with client.messages.stream(**ask) as s:
                return cache, "".join(s.text_stream), s.get_final_message()
        raw = client.messages.with_raw_response.create(**ask)
        message = raw.parse()
        return raw.headers["x-sluice-cache"], message.content[0].text, message

    cache, text_first, _ = ask_claude(question, first_stream, {"x-mock-text": "Mount Everest."})
    assert (cache, text_first) == ("miss", "Mount Everest.")
    wait_stored(gateway)
    calls = provider_calls(gateway)
    if then_stream:
        # Two requests: the raw one (for the header) and the SDK's own stream; both are hits.
        cache, text_then, final = ask_claude(question, True)
    else:
        cache, text_then, final = ask_claude(question, False)
    assert (cache, text_then) == ("hit", "Mount Everest.")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 0
    paraphrase = ask_claude("Tell me the capital city of France", False)
    assert paraphrase[:2] == ("hit", "Mount Everest.")
    assert provider_calls(gateway) == calls
    # Another system prompt or a member the chat form drops (`top_k`) is another question.
    other = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=64, extra_body={"top_k": 5}, system="Be brief.",
                                                     messages=[{"role": "user", "content": question}])
    assert other.headers["x-sluice-cache"] == "miss"


def test_responses_clients_hit_in_their_own_schema(gateway):
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=DEMO_KEY, max_retries=0, timeout=30)
    ask = {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "What is the chemical symbol for gold?"}
    first = client.responses.with_raw_response.create(**ask, extra_headers={"x-mock-text": "Au."})
    assert first.headers["x-sluice-cache"] == "miss" and first.parse().output_text == "Au."
    wait_stored(gateway)
    calls = provider_calls(gateway)
    hit = client.responses.with_raw_response.create(**ask)
    assert hit.headers["x-sluice-cache"] == "hit" and hit.parse().output_text == "Au."
    with client.responses.stream(**ask) as stream:
        assert stream.get_final_response().output_text == "Au."
    assert provider_calls(gateway) == calls


def test_gemini_clients_hit_in_their_own_schema(gateway):
    client = genai.Client(api_key=DEMO_KEY, http_options=genai_types.HttpOptions(base_url=gateway.url(""), timeout=30_000))
    question = "What is the largest ocean on Earth?"
    first = client.models.generate_content(model="gemini-2.5-flash", contents=question, config=genai_types.GenerateContentConfig(
        http_options=genai_types.HttpOptions(headers={"x-mock-text": "The Pacific."})))
    assert first.text == "The Pacific." and first.sdk_http_response.headers["x-sluice-cache"] == "miss"
    wait_stored(gateway)
    calls = provider_calls(gateway)
    hit = client.models.generate_content(model="gemini-2.5-flash", contents=question)
    assert hit.text == "The Pacific." and hit.sdk_http_response.headers["x-sluice-cache"] == "hit"
    streamed = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=question))
    assert "".join(c.text or "" for c in streamed) == "The Pacific."
    assert streamed[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    # The model is in the path: another model is another entry.
    other = client.models.generate_content(model="gemini-2.5-pro", contents=question)
    assert other.sdk_http_response.headers["x-sluice-cache"] == "miss"
    assert provider_calls(gateway) == calls + 1


def test_entries_expire_with_their_ttl(gateway):
    question = "What is the speed of light?"
    ask(gateway, question, model="short-ttl-model")
    wait_stored(gateway, 1)
    assert ask(gateway, question, model="short-ttl-model").headers["x-sluice-cache"] == "hit"
    time.sleep(2.1)
    assert ask(gateway, question, model="short-ttl-model").headers["x-sluice-cache"] == "miss"


def test_route_overrides(gateway):
    # A strict route: the paraphrase (similarity ~0.9) is not close enough there.
    ask(gateway, "What is the capital of France?", model="strict-model")
    wait_stored(gateway, 1)
    assert ask(gateway, "Tell me the capital city of France", model="strict-model").headers["x-sluice-cache"] == "miss"
    assert ask(gateway, "What is the capital of France?", model="strict-model").headers["x-sluice-cache"] == "hit"
    # Exact-only: repeats hit, paraphrases are not even embedded.
    ask(gateway, "What is the capital of France?", model="exact-model")
    wait_stored(gateway, 2)
    assert ask(gateway, "Tell me the capital city of France", model="exact-model").headers["x-sluice-cache"] == "miss"
    assert ask(gateway, "What is the capital of France?", model="exact-model").headers["x-sluice-cache"] == "hit"
    exact_only = wait_until(lambda: (lines := [l for l in gateway.access_log() if l["model"] == "exact-model"])
                            and len(lines) == 3 and lines, "three log lines")
    assert [l["cache_embedding_ms"] for l in exact_only] == [None, None, None]
    off = ask(gateway, "What is the capital of France?", model="never-model")
    assert (off.headers["x-sluice-cache"], off.headers["x-sluice-cache-reason"]) == ("bypass", "off")


def test_cache_control_no_store_and_no_cache(gateway):
    ask(gateway, "Who wrote Hamlet?", headers={"cache-control": "no-store"})
    assert ask(gateway, "Who wrote Hamlet?").headers["x-sluice-cache"] == "miss"
    wait_stored(gateway, 1)
    refreshed = ask(gateway, "Who wrote Hamlet?", headers={"cache-control": "no-cache", "x-mock-text": "Shakespeare."})
    assert (refreshed.headers["x-sluice-cache"], refreshed.headers["x-sluice-cache-reason"]) == ("bypass", "no_cache")
    assert text(refreshed) == "Shakespeare."
    # The refreshed answer replaced the old one.
    wait_until(lambda: text(ask(gateway, "Who wrote Hamlet?")) == "Shakespeare." or None, "the refreshed answer")


def test_errors_cut_answers_and_tool_calls_are_not_stored(gateway):
    question = "What is the capital of France?"
    assert ask(gateway, question, headers={"x-mock-status": "500"}).status_code == 500
    filtered = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}]})
    ask(gateway, question, headers={"x-mock-raw": filtered, "x-mock-content-type": "application/json"})
    tool_call = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}}]})
    ask(gateway, question, headers={"x-mock-raw": tool_call, "x-mock-content-type": "application/json"})
    cut = requests.post(gateway.url(CHAT), stream=True, timeout=30,
                        headers={"authorization": f"Bearer {DEMO_KEY}", "x-mock-reset-after": "150"},
                        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": question}]})
    try:
        b"".join(cut.iter_content(None))
    except requests.exceptions.RequestException:
        pass
    wait_until(lambda: gateway.metric("sluice_cache_stores_total", status="skipped") >= 3 or None, "skips counted")
    assert gateway.metric("sluice_cache_stores_total", status="skipped", reason="status") >= 1
    assert gateway.metric("sluice_cache_stores_total", status="skipped", reason="unfinished") >= 1
    assert gateway.metric("sluice_cache_stores_total", status="skipped", reason="tool_calls") >= 1
    assert ask(gateway, question).headers["x-sluice-cache"] == "miss"


def test_prompts_the_pii_scrubber_changed_are_never_cached(gateway):
    for _ in range(2):
        response = ask(gateway, "Write a thank-you note to jane.doe@example.com")
        assert (response.headers["x-sluice-cache"], response.headers["x-sluice-cache-reason"]) == ("bypass", "pii")
    assert gateway.redis("KEYS", "sluice:cache:*") == ""


def test_a_hit_costs_no_budget(gateway):
    model = "gpt-4o-mini-2024-07-18"  # this test's own, to find its log lines
    assert ask(gateway, "What is the capital of Italy?", model=model).headers["x-sluice-cache"] == "miss"
    wait_stored(gateway)
    tokens = gateway.metric("sluice_tokens_total", model=model)
    assert tokens > 0  # the miss was metered
    assert ask(gateway, "What is the capital of Italy?", model=model).headers["x-sluice-cache"] == "hit"
    miss, hit = wait_until(lambda: (lines := [l for l in gateway.access_log() if l["model"] == model])
                           and len(lines) == 2 and lines, "both log lines")
    # The miss was charged; neither the token counter nor the budget enforcer charges the hit.
    assert miss["cache"] == "miss" and int(miss["prompt_tokens"]) > 0 and float(miss["cost_usd"]) > 0
    assert hit["cache"] == "hit"
    assert (hit["prompt_tokens"], hit["completion_tokens"], hit["cost_usd"]) == (None, None, None)
    assert hit["budget"] == "admitted"
    assert gateway.metric("sluice_tokens_total", model=model) == tokens


def test_other_apis_pass_with_a_bypass(gateway):
    response = requests.post(gateway.url("/v1/embeddings"), json={"model": "text-embedding-3-small", "input": "hi"},
                             headers={"authorization": f"Bearer {DEMO_KEY}"}, timeout=30)
    assert (response.headers["x-sluice-cache"], response.headers["x-sluice-cache-reason"]) == ("bypass", "api")
    count = requests.post(gateway.url("/v1/messages/count_tokens"), timeout=30, headers={"x-api-key": DEMO_KEY},
                          json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]})
    assert (count.headers["x-sluice-cache"], count.headers["x-sluice-cache-reason"]) == ("bypass", "api")
    # A Messages body that is no Messages request is not looked up.
    odd = requests.post(gateway.url("/v1/messages"), timeout=30, headers={"x-api-key": DEMO_KEY},
                        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": "hi"})
    assert (odd.headers["x-sluice-cache"], odd.headers["x-sluice-cache-reason"]) == ("bypass", "unreadable")
    assert "x-sluice-cache" not in requests.get(gateway.url("/v1/models"), timeout=30,
                                                headers={"authorization": f"Bearer {DEMO_KEY}"}).headers


# --- the exact index: new prompts cost no Redis lookup, stored answers are always found -----------

def redis_gets(stack) -> int:
    stats = stack.redis("INFO", "commandstats")
    line = next((l for l in stats.splitlines() if l.startswith("cmdstat_get:")), "")
    return int(line.split("calls=", 1)[1].split(",", 1)[0]) if line else 0


def index_in_sync(stack, batch=iter(range(100_000))):
    """Waits until a batch of new prompts (exact mode, never stored, so every one a miss) makes no
    Redis `GET`: every worker of `stack` has copied the index and trusts it. Before the index
    existed, each new prompt made one."""
    def gets_for_a_batch():
        before = redis_gets(stack)
        for _ in range(10):
            r = ask(stack, f"new prompt {next(batch)}", model="exact-m", headers={"cache-control": "no-store"})
            assert r.headers["x-sluice-cache"] == "miss", r.headers
        return redis_gets(stack) - before
    wait_until(lambda: gets_for_a_batch() == 0 or None, "a batch of new prompts without a Redis lookup", 30)


def exact_hit(stack, prompt, answer):
    # `no-store`: a miss must not replace the stored answer (the lookup still happens).
    r = ask(stack, prompt, model="exact-m", headers={"cache-control": "no-store"})
    return (r.headers["x-sluice-cache"], text(r)) == ("hit", answer) or None


def test_new_prompts_cost_no_redis_lookup_once_the_index_is_in_sync(gateway):
    index_in_sync(gateway)
    assert gateway.metric("sluice_cache_index_total", decision="absent") >= 10
    # A stored answer is known to every worker at once: its repeats are looked up and hit.
    first = ask(gateway, "the stored prompt", model="exact-m", headers={"x-mock-text": "stored answer"})
    assert first.headers["x-sluice-cache"] == "miss"
    wait_stored(gateway)
    assert all(exact_hit(gateway, "the stored prompt", "stored answer") for _ in range(8))
    assert gateway.metric("sluice_cache_index_total", decision="maybe") >= 8


def test_answers_stored_through_another_gateway_or_before_start_are_found(gateway):
    # Exact mode: only the index and the exact `GET` can find an answer (no embedding, no search).
    early = "What is the melting point of iron?"
    assert ask(gateway, early, model="exact-m", headers={"x-mock-text": "1538 C"}).headers["x-sluice-cache"] == "miss"
    wait_stored(gateway)
    with Stack(configs={"sluice.budget_enforcer": KEYS, "sluice.semantic_cache": CACHE}, redis_from=gateway,
               embedder_from=gateway) as other:
        # Stored before this gateway started: once its index is trusted, it still finds it.
        index_in_sync(other)
        assert all(exact_hit(other, early, "1538 C") for _ in range(8))
        # Stored through one gateway while the other runs: found within a few sync periods.
        for source, target, prompt in [(gateway, other, "How far is the Moon?"), (other, gateway, "How deep is the sea?")]:
            r = ask(source, prompt, model="exact-m", headers={"x-mock-text": prompt.upper()})
            assert r.headers["x-sluice-cache"] == "miss"
            wait_until(lambda: exact_hit(target, prompt, prompt.upper()), f"{prompt} served by the other gateway", 30)
            wait_until(lambda: all(exact_hit(target, prompt, prompt.upper()) for _ in range(8)) or None,
                       "by each of its workers", 30)
        assert other.vm_failures() == []


# --- the cache alone (global namespace): bad inputs and dependencies down ------------------------

@pytest.fixture(scope="module")
def alone(gateway):
    yield from running(configs={"sluice.semantic_cache": {"namespace": "global", "max_request_bytes": 100_000}},
                       modules=["sluice.semantic_cache"], embedder_from=gateway)


def test_bad_requests_pass_upstream_uncached(alone):
    alone.redis("FLUSHALL")
    cases = {
        b"{not json": "unreadable",
        b'{"model": "gpt-4o-mini", "messages": "hi"}': "unreadable",
        b'{"model": 7, "messages": []}': "unreadable",
        b'["model"]': "unreadable",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xff\xfe"}]}': "unreadable",
        json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 200_000}]}).encode():
            "too_large",
    }
    for body, reason in cases.items():
        response = post(alone, body)
        assert response.headers.get("x-sluice-cache-reason") == reason, (body[:60], response.headers)
        assert response.status_code == 200  # the mock answers anything; the cache only stepped aside
    empty = requests.post(alone.url(CHAT), timeout=30)
    assert empty.headers.get("x-sluice-cache-reason") == "unreadable"
    # Odd but valid: a user turn with no text is cached exactly, never embedded.
    image_only = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}).encode()
    assert post(alone, image_only).headers["x-sluice-cache"] == "miss"
    wait_until(lambda: post(alone, image_only).headers["x-sluice-cache"] == "hit" or None, "exact hit")
    assert alone.redis("KEYS", "sluice:cache:global:*")


def test_redis_down_means_bypass(alone):
    alone.redis("FLUSHALL")
    alone.stop_webdis()
    try:
        for _ in range(3):
            response = post(alone, json.dumps({"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": "What is the capital of Spain?"}]}))
            assert response.status_code == 200 and text(response) == "The capital of France is Paris."
            assert (response.headers["x-sluice-cache"], response.headers["x-sluice-cache-reason"]) == \
                ("bypass", "redis_down")
    finally:
        alone.start_webdis()
    assert alone.metric("sluice_cache_lookups_total", status="bypass", reason="redis_down") >= 3


def test_embedder_down_means_bypass_and_exact_repeats_still_hit(gateway):
    with Stack(configs={"sluice.semantic_cache": {"namespace": "global"}}, modules=["sluice.semantic_cache"]) as s:  # embedder: a dead port
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of Peru?"}]})
        first = post(s, body)
        assert first.status_code == 200
        assert (first.headers["x-sluice-cache"], first.headers["x-sluice-cache-reason"]) == ("bypass", "embedder_down")
        wait_until(lambda: post(s, body).headers["x-sluice-cache"] == "hit" or None, "exact hit without embeddings")
        assert s.vm_failures() == []


# One case proves Envoy refuses the config and logs the field; every field's message is
# unit-tested in Rust (src/config.rs).
def test_bad_configs_are_rejected():
    assert_config_rejected("sluice.semantic_cache", ".routes[0].ttl_seconds", {"routes": [{"ttl_seconds": 0}]})
