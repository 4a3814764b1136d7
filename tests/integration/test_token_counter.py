"""The token counter inside a real Envoy: counts, cost, metrics, facts, and bad inputs."""

import gzip
import json
import subprocess
import uuid

import pytest
import requests

from harness import reference_tokens
from harness.procs import wait_until
from harness.stack import assert_config_rejected

CHAT = "/v1/chat/completions"
MOCK_TEXT = "The capital of France is Paris."


def unique_model(prefix="gpt-4o"):
    """A model name of its own per test (priced by its prefix), so metrics never mix."""
    return f"{prefix}-t{uuid.uuid4().hex[:8]}"


def chat_body(model, stream=False, content="What is the capital of France?", **extra):
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}], **extra}


def eventually(check, what, timeout=10.0):
    return wait_until(check, what, timeout)


def tokens(stack, model, direction, provider="openai"):
    return stack.metric("sluice_tokens_total", model=model, direction=direction, provider=provider, team="none")


def log_line(stack, model):
    """The access log line of the (single) request made with `model`."""
    def find():
        return next((line for line in stack.access_log() if line.get("model") == model), None)
    return eventually(find, f"access log line for {model}")


def usage_headers(prompt, completion, cached=0, reasoning=0):
    return {"x-mock-prompt-tokens": str(prompt), "x-mock-completion-tokens": str(completion),
            "x-mock-cached-tokens": str(cached), "x-mock-reasoning-tokens": str(reasoning)}


@pytest.fixture(autouse=True)
def envoy_survives(request):
    """After every test: Envoy still serves a metered request and no wasm VM failed."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack = request.getfixturevalue("stack")
    model = unique_model()
    assert requests.post(stack.url(CHAT), json=chat_body(model)).status_code == 200
    assert eventually(lambda: tokens(stack, model, "input") == 21, "the follow-up request counted")
    assert stack.vm_failures() == []


# --- counts from the provider's usage --------------------------------------------------------

def test_json_answer_counts_equal_provider_usage(stack):
    model = unique_model()
    r = requests.post(stack.url(CHAT), json=chat_body(model), headers=usage_headers(1234, 56, cached=200, reasoning=9))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == MOCK_TEXT
    assert tokens(stack, model, "input") == 1234
    assert tokens(stack, model, "output") == 56
    assert tokens(stack, model, "cached") == 200
    assert tokens(stack, model, "reasoning") == 9
    # gpt-4o prices: (1034 * 2.50 + 200 * 1.25 + 56 * 10.00) / 1e6 USD
    expected_usd = (1034 * 2.50 + 200 * 1.25 + 56 * 10.00) / 1e6
    assert stack.metric("sluice_cost_micro_usd_total", model=model) == round(expected_usd * 1e6)
    assert stack.metric("sluice_requests_total", model=model, api="chat_completions", streamed="false",
                  status="2xx") == 1
    line = log_line(stack, model)
    assert line["prompt_tokens"] == "1234" and line["completion_tokens"] == "56" and line["cached_tokens"] == "200"
    assert line["usage_source"] == "provider"
    assert abs(float(line["cost_usd"]) - expected_usd) < 1e-9
    assert line["provider"] == "openai" and line["streamed"] is None
    assert line["response_model"] is None, "same model as asked: not repeated"
    assert "What is the capital" not in json.dumps(line), "prompts are never logged"


def test_stream_gets_usage_injected_and_counted(stack):
    model = unique_model()
    requests.delete(stack.mock("/mock/requests"))
    r = requests.post(stack.url(CHAT), json=chat_body(model, stream=True), headers=usage_headers(77, 11))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert '"usage"' in r.text, "the provider was asked for a usage chunk"
    sent = [q for q in requests.get(stack.mock("/mock/requests")).json() if model in q["body"]]
    assert json.loads(sent[0]["body"])["stream_options"] == {"include_usage": True}
    assert tokens(stack, model, "input") == 77
    assert tokens(stack, model, "output") == 11
    assert stack.metric("sluice_requests_total", model=model, streamed="true", status="2xx") == 1


def test_stream_usage_injection_over_http2(stack):
    """HTTP/2 clients (the usual case inside a mesh) get the same rewrite and counts."""
    model = unique_model()
    body = json.dumps(chat_body(model, stream=True))
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", stack.url(CHAT), "-d", body,
                          "-H", "content-type: application/json", "-H", "x-mock-prompt-tokens: 13"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert '"usage"' in out and out.rstrip().endswith("data: [DONE]")
    assert tokens(stack, model, "input") == 13 and tokens(stack, model, "output") == 7


def test_body_the_client_asked_usage_for_is_sent_byte_for_byte(stack):
    model = unique_model()
    raw = json.dumps(chat_body(model, stream=True, stream_options={"include_usage": True}), indent=1)
    r = requests.post(stack.url(CHAT), data=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200
    sent = [q for q in requests.get(stack.mock("/mock/requests")).json() if model in q["body"]]
    assert sent[0]["body"] == raw


def test_stream_without_usage_is_counted_with_tiktoken(stack):
    model = unique_model()
    text = "Streams without usage are counted: naïve café, 東京, emoji 🚀 and code `x = 1`."
    body = chat_body(model, stream=True, content="Count me exactly, please.")
    r = requests.post(stack.url(CHAT), json=body, headers={"x-mock-usage": "off", "x-mock-text": text.encode().decode("latin-1")})
    assert r.status_code == 200
    streamed = "".join(
        (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content", "") or ""
        for line in r.content.decode().splitlines() if line.startswith("data: {"))
    assert streamed == text
    assert tokens(stack, model, "output") == reference_tokens.count(model, text)
    assert tokens(stack, model, "input") == reference_tokens.chat_prompt_tokens(model, body["messages"])
    assert log_line(stack, model)["usage_source"] == "counted"


def test_json_answer_without_usage_is_counted(stack):
    model = unique_model("gpt-4")
    r = requests.post(stack.url(CHAT), json=chat_body(model), headers={"x-mock-usage": "off"})
    assert r.status_code == 200
    assert tokens(stack, model, "output") == reference_tokens.count(model, MOCK_TEXT)


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64])
def test_odd_chunk_boundaries(stack, chunk_bytes):
    model = unique_model()
    headers = {"x-mock-chunk-bytes": str(chunk_bytes), **usage_headers(40, 13)}
    r = requests.post(stack.url(CHAT), json=chat_body(model, stream=True), headers=headers)
    assert r.status_code == 200
    assert (tokens(stack, model, "input"), tokens(stack, model, "output")) == (40, 13)
    headers["x-mock-usage"] = "off"
    model2 = unique_model()
    requests.post(stack.url(CHAT), json=chat_body(model2, stream=True), headers=headers)
    assert tokens(stack, model2, "output") == reference_tokens.count(model2, MOCK_TEXT)


# --- every API ------------------------------------------------------------------------------

API_CASES = [
    ("/v1/completions", {"prompt": "Say hi"}),
    ("/v1/responses", {"input": "Say hi"}),
    ("/v1/messages", {"max_tokens": 64, "messages": [{"role": "user", "content": "Say hi"}]}),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path,extra", API_CASES)
def test_every_api_json_and_stream(stack, path, extra, stream):
    anthropic = path == "/v1/messages"
    model = unique_model("claude-sonnet-4" if anthropic else "gpt-4o")
    body = {"model": model, "stream": stream, **extra}
    r = requests.post(stack.url(path), json=body, headers=usage_headers(300, 20, cached=100))
    assert r.status_code == 200
    provider = "anthropic" if anthropic else "openai"
    # Anthropic's input_tokens exclude cache reads: the prompt is input + cache reads.
    assert tokens(stack, model, "input", provider) == (400 if anthropic else 300)
    assert tokens(stack, model, "output", provider) == 20
    assert tokens(stack, model, "cached", provider) == 100
    api = {"/v1/completions": "completions", "/v1/responses": "responses", "/v1/messages": "messages"}[path]
    assert stack.metric("sluice_requests_total", model=model, api=api, streamed=str(stream).lower()) == 1


def test_anthropic_stream_without_usage_is_counted(stack):
    model = unique_model("claude-3-5-haiku")
    body = {"model": model, "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    r = requests.post(stack.url("/v1/messages"), json=body, headers={"x-mock-usage": "off"})
    assert r.status_code == 200
    assert tokens(stack, model, "output", "anthropic") == reference_tokens.count(model, MOCK_TEXT)


def test_embeddings(stack):
    model = unique_model("text-embedding-3-small")
    r = requests.post(stack.url("/v1/embeddings"), json={"model": model, "input": ["a", "b"]},
                      headers={"x-mock-prompt-tokens": "8"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    assert tokens(stack, model, "input") == 8
    assert tokens(stack, model, "output") == 0


# --- bad inputs: a clear outcome, no panic, nothing lost ------------------------------------

def test_malformed_request_json_passes_through(stack):
    before = stack.metric("sluice_passthrough_total", reason="unparsable_request")
    r = requests.post(stack.url(CHAT), data=b'{"model": "gpt-4o", "messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 200, "the provider decides about bad requests, not the counter"
    assert stack.metric("sluice_passthrough_total", reason="unparsable_request") == before + 1


@pytest.mark.parametrize("body", [b"", b"\xff\xfe\x00garbage", b"[1,2,3]", b'{"model": 5, "messages": "x"}', b"null"])
def test_odd_request_bodies(stack, body):
    r = requests.post(stack.url(CHAT), data=body, headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_non_utf8_headers(stack):
    model = unique_model()
    raw = json.dumps(chat_body(model)).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Connection: close\r\nX-Odd: \xff\xfe\r\nContent-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
    import socket
    with socket.create_connection(("127.0.0.1", stack.listen_port), timeout=10) as s:
        s.sendall(request)
        # Read the whole answer: closing early would cut it (and a cut JSON answer is not counted).
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    # The reply's first bytes can arrive before Envoy has run the end-of-answer callbacks.
    assert eventually(lambda: tokens(stack, model, "input") == 21, "the request counted")


def test_five_megabyte_prompt(stack):
    model = unique_model()
    content = "lorem ipsum dolor sit amet " * (5 * 1024 * 1024 // 27)
    r = requests.post(stack.url(CHAT), json=chat_body(model, content=content), headers={"x-mock-usage": "off"})
    assert r.status_code == 200
    line = log_line(stack, model)
    exact = reference_tokens.count(model, content)
    estimate = int(line["prompt_estimate"])
    assert abs(estimate - exact) / exact < 0.02, (estimate, exact)
    assert tokens(stack, model, "input") == estimate


def test_body_over_the_read_limit_passes_through_unread(stack):
    """Above `max_request_bytes` (16 MiB) the counter steps aside before Envoy's 32 MiB limit."""
    model = unique_model()
    before = stack.metric("sluice_passthrough_total", reason="too_large_request")
    content = "x" * (20 * 1024 * 1024)
    r = requests.post(stack.url(CHAT), json=chat_body(model, content=content), headers=usage_headers(5, 6))
    assert r.status_code == 200
    assert stack.metric("sluice_passthrough_total", reason="too_large_request") == before + 1
    # The answer is still metered, under the model the provider named (the request was not read).
    assert tokens(stack, model, "input") == 5 and tokens(stack, model, "output") == 6


def test_upstream_500_is_passed_on_and_not_charged(stack):
    model = unique_model()
    r = requests.post(stack.url(CHAT), json=chat_body(model), headers={"x-mock-status": "500"})
    assert r.status_code == 500 and r.json()["error"]["message"] == "mock error 500"
    assert stack.metric("sluice_requests_total", model=model, status="5xx") == 1
    assert tokens(stack, model, "input") == 0 and tokens(stack, model, "output") == 0


def test_stream_reset_mid_way_is_charged_for_what_streamed(stack):
    model = unique_model()
    headers = {"x-mock-reset-after": "700", "x-mock-chunk-bytes": "50", "x-mock-chunk-delay-ms": "5"}
    received = b""
    with pytest.raises(requests.exceptions.RequestException):
        with requests.post(stack.url(CHAT), json=chat_body(model, stream=True), headers=headers, stream=True) as r:
            for piece in r.iter_content(chunk_size=None):
                received += piece
    events = [line[6:] for line in received.decode(errors="replace").split("\n\n")[:-1] if line.startswith("data: {")]
    streamed = "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content", "") or "" for e in events)
    assert streamed, "some text streamed before the reset"
    eventually(lambda: stack.metric("sluice_requests_total", model=model, status="reset") == 1, "reset counted")
    assert tokens(stack, model, "output") == reference_tokens.count(model, streamed)


def test_compressed_answer_passes_through_untouched(stack):
    before = stack.metric("sluice_passthrough_total", reason="compressed")
    r = requests.post(stack.url(CHAT), json=chat_body(unique_model()), headers={"x-mock-gzip": "on"},
                      stream=True)
    raw = r.raw.read(decode_content=False)
    assert json.loads(gzip.decompress(raw))["choices"][0]["message"]["content"] == MOCK_TEXT
    assert stack.metric("sluice_passthrough_total", reason="compressed") == before + 1


@pytest.mark.parametrize("raw,content_type,reason", [
    ("<html>oops</html>", "text/html", "not_json"),
    ('{"choices": "not a list"', "application/json", "unparsable_answer"),
])
def test_answers_not_understood_pass_through(stack, raw, content_type, reason):
    before = stack.metric("sluice_passthrough_total", reason=reason)
    r = requests.post(stack.url(CHAT), json=chat_body(unique_model()),
                      headers={"x-mock-raw": raw, "x-mock-content-type": content_type})
    assert r.status_code == 200 and r.text == raw
    assert stack.metric("sluice_passthrough_total", reason=reason) == before + 1


def test_other_paths_pass_through(stack):
    before = stack.metric("sluice_passthrough_total", reason="other_api")
    r = requests.get(stack.url("/health"))
    assert r.status_code == 200
    assert stack.metric("sluice_passthrough_total", reason="other_api") == before + 1


def test_time_to_first_token_histogram(stack):
    model = unique_model()
    requests.post(stack.url(CHAT), json=chat_body(model, stream=True), headers={"x-mock-latency-ms": "120"})
    count = eventually(lambda: stack.metric("sluice_time_to_first_token_ms_count", model=model), "ttft flushed")
    assert count == 1
    assert stack.metric("sluice_time_to_first_token_ms_bucket", model=model, le="100") == 0
    assert stack.metric("sluice_time_to_first_token_ms_bucket", model=model, le="250") == 1
    assert int(log_line(stack, model)["ttft_ms"]) >= 120


def test_each_requests_cost_is_a_histogram_beside_the_cost_counter(stack):
    """`sluice_request_cost_micro_usd`: one sample per priced request in the shipped buckets
    (0.0001 to 5 USD). Its count is the requests', and its sum the cost counter's up to Envoy's
    histogram precision (Envoy sums bins of two significant digits, so about 1.4% high here)."""
    model = unique_model()
    # gpt-4o, 2.50 and 10.00 USD per million: 350, 3,500, 35,000 and 350,000 micro-USD.
    workload = [(100, 10), (1000, 100), (10000, 1000), (100000, 10000)]
    for prompt, completion in workload:
        r = requests.post(stack.url(CHAT), json=chat_body(model), headers=usage_headers(prompt, completion))
        assert r.status_code == 200
    eventually(lambda: stack.metric("sluice_request_cost_micro_usd_count", model=model) == len(workload),
               "the cost histogram flushed")
    counted = stack.metric("sluice_cost_micro_usd_total", model=model)
    assert counted == sum(round(p * 2.5 + c * 10.0) for p, c in workload) == 388_850
    assert counted <= stack.metric("sluice_request_cost_micro_usd_sum", model=model) <= counted * 1.02
    buckets = {le: stack.metric("sluice_request_cost_micro_usd_bucket", model=model, le=le)
               for le in ["100", "1000", "5000", "50000", "500000", "5000000"]}
    assert buckets == {"100": 0, "1000": 1, "5000": 2, "50000": 3, "500000": 4, "5000000": 4}, buckets


def test_concurrent_streams_all_counted(stack):
    from concurrent.futures import ThreadPoolExecutor
    model = unique_model()

    def one(_):
        return requests.post(stack.url(CHAT), json=chat_body(model, stream=True),
                             headers={"x-mock-chunk-bytes": "17", **usage_headers(10, 3)}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(64))) == {200}
    assert tokens(stack, model, "input") == 640 and tokens(stack, model, "output") == 192


def test_envoy_still_serves_and_no_vm_failed(stack):
    model = unique_model()
    assert requests.post(stack.url(CHAT), json=chat_body(model)).status_code == 200
    assert tokens(stack, model, "input") == 21
    assert stack.vm_failures() == []
    assert stack.metric("envoy_wasm_sluice_token_counter_vm_reload") == 0
    assert stack.metric("envoy_wasm_envoy_wasm_runtime_v8_active") >= 2, "one VM per worker is alive"


# --- optional count headers and trailers ----------------------------------------------------

@pytest.mark.parametrize("stream", ["false", "true"])
@pytest.mark.parametrize("protocol", [["--http2-prior-knowledge"], ["--http1.1", "-H", "TE: trailers"]])
def test_count_trailers(stack_with_headers, stream, protocol):
    body = json.dumps(chat_body(unique_model(), stream=stream == "true"))
    out = subprocess.run(["curl", "-s", "-i", *protocol, stack_with_headers.url(CHAT), "-d", body,
                          "-H", "content-type: application/json", "-H", "x-mock-prompt-tokens: 31"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.lower()
    assert "x-sluice-prompt-tokens-estimate:" in out
    assert "x-sluice-prompt-tokens: 31" in out
    assert "x-sluice-completion-tokens: 7" in out
    assert "x-sluice-total-tokens: 38" in out
    assert "x-sluice-cost-usd:" in out


def test_count_trailers_on_an_empty_answer_do_not_trap_the_vm(stack_with_headers):
    """An answer that ends with its headers has no trailer map: the counter must not try."""
    for _ in range(3):
        r = requests.post(stack_with_headers.url(CHAT), json=chat_body(unique_model()), headers={"x-mock-raw": ""})
        assert r.status_code == 200 and r.content == b""
    assert requests.post(stack_with_headers.url(CHAT), json=chat_body(unique_model())).status_code == 200
    assert stack_with_headers.vm_failures() == []


def test_no_count_headers_by_default(stack):
    r = requests.post(stack.url(CHAT), json=chat_body(unique_model()))
    assert not [h for h in r.headers if h.lower().startswith("x-sluice")]


# --- configuration --------------------------------------------------------------------------

# One case per module proves Envoy refuses the config and logs the field; every field's message
# is unit-tested in Rust (src/config.rs).
def test_bad_config_is_rejected_with_the_field_named():
    assert_config_rejected("sluice.token_counter", ".respons_headers", {"respons_headers": True})
