"""Every way around the gate, tested as classes in a real Envoy with the whole chain: requests
that end in trailers, percent-encoded and odd paths, unknown paths and methods, internal headers,
secrets in logs. Each case runs on every API path the modules handle, over HTTP/1.1 and HTTP/2
(h2c), JSON and streaming; the mock provider records everything that reaches it, so "refused"
also means "never sent"."""

import copy
import json
import re
import urllib.parse
import uuid

import pytest
import requests
import yaml

from harness import wire
from harness.procs import wait_until
from harness.stack import DEMO_KEY, ROOT, Stack, connection_manager, key_entry, running

GOOD = "sk-gate-good"      # team red, may use `allowed-*` models
OTHER = "sk-gate-other"    # team blue, same models
UNKNOWN = "sk-gate-unknown"  # in neither the config nor Redis
PROVIDER_KEY = "sk-provider-openai-credential"
ANTHROPIC_KEY = "sk-provider-anthropic-credential"
EMAIL = "jane.doe@example.com"
ALLOWED, FORBIDDEN = "allowed-model", "forbidden-model"

BUDGET = {
    "keys": [key_entry(GOOD, "good", team="red", models=["allowed-*"]),
             key_entry(OTHER, "other", team="blue", models=["allowed-*"])],
    "redis_keys": {"enabled": True},
    "passthrough": [{"prefix": "/v1/files", "methods": ["GET"], "teams": ["red"]}],
}

APIS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
    # The model, and streaming, are in the path (see `api_path`).
    "gemini": "/v1beta/models/{model}:generateContent",
}
GEMINI_KEY = "AIza-provider-gemini-credential"
PROTOCOLS = ["h1", "h2"]


def api_path(api, model=ALLOWED, stream=False):
    if api == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{method}"
    return APIS[api]


def body(api, model, text, stream=False):
    if api == "gemini":
        return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()
    b = {
        "chat": {"model": model, "messages": [{"role": "user", "content": text}]},
        "completions": {"model": model, "prompt": text},
        "embeddings": {"model": model, "input": text},
        "responses": {"model": model, "input": text},
        "messages": {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": text}]},
        "count_tokens": {"model": model, "messages": [{"role": "user", "content": text}]},
    }[api]
    if stream:
        b["stream"] = True
    return json.dumps(b).encode()


def adapter_passthrough(config):
    """Lets the OpenAI provider's adapter send `/v1/files` (GET) with its credential."""
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] != "provider_openai":
            continue
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        for f in options["http_filters"]:
            if f["name"] == "sluice.provider_adapter":
                value = f["typed_config"]["config"]["configuration"]
                adapter = json.loads(value["value"])
                adapter["passthrough"] = [{"prefix": "/v1/files", "methods": ["GET"]}]
                value["value"] = json.dumps(adapter)


# A webhook guard on prompts and answers: it allows everything but the scripted markers.
GUARD = {"name": "gate-policy", "kind": "webhook", "cluster": "guard_services", "authority": "guards",
         "timeout_ms": 10_000}
GUARDS = {"sluice.guard": {"guards": [{**GUARD, "check": ["prompt"]}]},
          "sluice.guard_answers": {"guards": [{**GUARD, "check": ["answer"]}]}}


@pytest.fixture(scope="module")
def gate():
    yield from running(configs={"sluice.budget_enforcer": BUDGET, **GUARDS},
                       provider_keys={"OPENAI_API_KEY": PROVIDER_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                                      "GEMINI_API_KEY": GEMINI_KEY},
                       patch=adapter_passthrough)


def send(stack, protocol, method, path, key=GOOD, data=b"", trailers=None, headers=None):
    """Sends one request with a fresh `x-test-id`; returns (answer, what the provider received)."""
    test_id = uuid.uuid4().hex
    all_headers = {"x-test-id": test_id, "content-type": "application/json", **(headers or {})}
    if key:
        all_headers["authorization"] = f"Bearer {key}"
    answer = wire.send(protocol, stack.listen_port, method, path, headers=all_headers, body=data, trailers=trailers)
    return answer, received(stack, test_id)


def header(request, name):
    return {k.lower(): v for k, v in request["headers"].items()}.get(name)


def received(stack, test_id):
    seen = requests.get(stack.mock("/mock/requests"), timeout=10).json()
    return [r for r in seen if r["headers"].get("x-test-id") == test_id]


TRAILERS = {"x-checksum": "abc123"}


# --- 1. trailers: every module decides, whichever way the stream ends --------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_trailers_do_not_skip_the_key_check(gate, protocol, api):
    answer, sent = send(gate, protocol, "POST", api_path(api), key=UNKNOWN, data=body(api, ALLOWED, "hi"),
                        trailers=TRAILERS)
    assert answer.status == 401, answer
    assert sent == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_trailers_do_not_skip_the_model_allow_list(gate, protocol, api):
    answer, sent = send(gate, protocol, "POST", api_path(api, FORBIDDEN), data=body(api, FORBIDDEN, "hi"),
                        trailers=TRAILERS)
    assert answer.status == 403, answer
    assert answer.json()["error"]["code"] == "model_not_allowed"
    assert sent == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_trailers_do_not_skip_the_pii_scrubber(gate, protocol, api, stream):
    if stream and api == "embeddings":
        pytest.skip("embeddings do not stream")
    answer, sent = send(gate, protocol, "POST", api_path(api, stream=stream),
                        data=body(api, ALLOWED, f"Mail {EMAIL} today", stream),
                        trailers=TRAILERS)
    assert answer.status == 200, answer
    [request] = sent
    assert EMAIL not in request["body"] and "<EMAIL_1>" in request["body"]
    expected = {"messages": ("x-api-key", ANTHROPIC_KEY), "count_tokens": ("x-api-key", ANTHROPIC_KEY),
                "gemini": ("x-goog-api-key", GEMINI_KEY)}.get(
        api, ("authorization", f"Bearer {PROVIDER_KEY}"))
    assert header(request, expected[0]) == expected[1]


@pytest.mark.parametrize("trailers", [None, TRAILERS], ids=["plain", "trailers"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_no_request_gets_around_the_prompt_guard(gate, protocol, api, stream, trailers):
    if stream and api in ("embeddings", "count_tokens"):
        pytest.skip("no stream")
    answer, sent = send(gate, protocol, "POST", api_path(api, stream=stream),
                        data=body(api, ALLOWED, "Share it [[block:secrets]]", stream), trailers=trailers)
    assert answer.status == 400, answer
    assert answer.json()["error"]["code"] == "content_filter"
    assert sent == []


# How each schema's answer says it was withheld.
WITHHELD = {"chat": '"content_filter"', "completions": '"content_filter"', "responses": '"content_filter"',
            "messages": '"refusal"', "gemini": '"SAFETY"'}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", WITHHELD)
def test_no_answer_gets_around_the_answer_guard(gate, protocol, api, stream):
    text = urllib.parse.quote("Harmful words [[block:harm]] here.")
    answer, sent = send(gate, protocol, "POST", api_path(api, stream=stream), data=body(api, ALLOWED, "hi", stream),
                        headers={"x-mock-text": text, "x-mock-piece-chars": "4"})
    assert len(sent) == 1 and answer.status == 200, answer
    text = answer.body.decode()
    assert WITHHELD[api] in text, text
    assert "Harmful" not in text and "block:harm" not in text


KEY_CARRIERS = ["authorization", "x-api-key", "x-goog-api-key", "query"]


def carried(api, carrier, key):
    """(path, headers) that present `key` the way `carrier` does, to `api`."""
    if carrier == "query":
        return f"{api_path(api)}?key={key}", {}
    value = f"Bearer {key}" if carrier == "authorization" else key
    return api_path(api), {carrier: value}


@pytest.mark.parametrize("carrier", KEY_CARRIERS)
@pytest.mark.parametrize("api", APIS)
def test_every_key_carrier_is_checked_and_never_passed_on(gate, api, carrier):
    path, headers = carried(api, carrier, UNKNOWN)
    answer, sent = send(gate, "h1", "POST", path, key=None, data=body(api, ALLOWED, "hi"), headers=headers)
    assert answer.status == 401, answer
    assert sent == []
    path, headers = carried(api, carrier, GOOD)
    answer, sent = send(gate, "h1", "POST", path, key=None, data=body(api, ALLOWED, "hi"), headers=headers)
    assert answer.status == 200, answer
    [request] = sent
    assert GOOD not in json.dumps(request["headers"]) + request["raw_path"], request


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trailers_with_no_body_are_refused(gate, protocol):
    answer, sent = send(gate, protocol, "POST", APIS["chat"], data=b"", trailers=TRAILERS)
    # No body, so no model either: the allow-list or the body check refuses it.
    assert answer.status in (400, 403), answer
    assert sent == []


# --- 2. paths: normalised by Envoy, and refused by the modules when unclean -------------------

ODD_PATHS = [
    "/v1/chat/%63ompletions",
    "/v1/chat/completion%73",
    "/v1//chat/completions",
    "/v1/./chat/completions",
    "/v1/files/../chat/completions",
    "/v1/chat%2Fcompletions",
    "/v1/chat%2fcompletions",
    "/v1/chat%5Ccompletions",
    "/v1/%6d%65ssages",
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_paths_never_bypass_the_allow_list(gate, protocol, path):
    data = body("messages" if "ssages" in path else "chat", FORBIDDEN, f"Mail {EMAIL}")
    answer, sent = send(gate, protocol, "POST", path, data=data)
    assert answer.status in (400, 403, 404), answer
    assert sent == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_encoded_api_path_is_served_as_that_api(gate, protocol):
    """Envoy decodes `%63` before the modules see the path: it is a chat request, scrubbed."""
    answer, sent = send(gate, protocol, "POST", "/v1/chat/%63ompletions", data=body("chat", ALLOWED, f"Mail {EMAIL}"))
    assert answer.status == 200, answer
    [request] = sent
    assert request["path"] == "/v1/chat/completions"
    assert EMAIL not in request["body"]


# --- 3. unknown paths and methods: 404 before any credential ---------------------------------

UNKNOWN_REQUESTS = [
    ("GET", "/v1/files"),  # passthrough for team red only, GET only: see below
    ("POST", "/v1/files"),
    ("DELETE", "/v1/files/file-abc"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/organization/users"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/moderations"),
    ("GET", "/made/up"),
    ("PUT", "/v1/chat/completions"),
    ("PATCH", "/v1/chat/completions"),
    ("DELETE", "/v1/chat/completions"),
    ("GET", "/v1/chat/completions"),
    ("OPTIONS", "/v1/messages"),
    ("BREW", "/v1/embeddings"),
    ("POST", "/v1/models"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("method,path", UNKNOWN_REQUESTS)
def test_unknown_paths_and_methods_are_404(gate, protocol, method, path):
    key = OTHER if (method, path) == ("GET", "/v1/files") else GOOD
    data = body("chat", ALLOWED, f"Mail {EMAIL}") if method not in ("GET", "OPTIONS") else b""
    answer, sent = send(gate, protocol, method, path, key=key, data=data)
    assert sent == []
    if method == "BREW" and protocol == "h1":
        assert answer.status == 400  # Envoy's HTTP/1.1 codec refuses unknown methods itself
        return
    assert answer.status == 404, answer
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("not_found_error", "unknown_url")
    assert sent == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_passthrough_paths_are_opt_in_and_get_the_provider_credential(gate, protocol):
    answer, sent = send(gate, protocol, "GET", "/v1/files/file-abc", key=GOOD)
    assert answer.status == 200, answer
    [request] = sent
    assert header(request, "authorization") == f"Bearer {PROVIDER_KEY}"
    # Admitted as the key's request.
    wait_until(lambda: any(line["path"] == "/v1/files/file-abc" and line["key"] == "good" for line in gate.access_log()),
               "the passthrough request's log line", 10)


def test_the_model_list_reaches_the_provider(gate):
    answer, sent = send(gate, "h1", "GET", "/v1/models", key=GOOD)
    assert answer.status == 200 and len(sent) == 1


def test_the_provider_adapter_alone_refuses_unknown_paths():
    """Without the budget enforcer in front, the adapter still attaches credentials only to
    requests it classified."""
    with Stack(modules=["sluice.provider_adapter"], concurrency=1,
               provider_keys={"OPENAI_API_KEY": PROVIDER_KEY}) as s:
        for method, path in [("GET", "/v1/files"), ("POST", "/v1/batches"), ("PUT", "/v1/chat/completions"),
                             ("DELETE", "/v1/files/file-abc")]:
            answer, sent = send(s, "h1", method, path, key=None, data=b"{}" if method != "GET" else b"")
            assert answer.status == 404, (method, path, answer)
            assert sent == []
        answer, sent = send(s, "h1", "POST", APIS["chat"], key=None, data=body("chat", ALLOWED, "hi"))
        assert answer.status == 200
        assert header(sent[0], "authorization") == f"Bearer {PROVIDER_KEY}"
        assert not s.vm_failures()


# --- 6. internal headers and secrets in logs -------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_internal_and_envoy_headers_never_reach_the_provider(gate, protocol):
    sneaky = {"x-sluice-team": "red", "x-sluice-user": "ann", "x-sluice-cluster": "provider_anthropic",
              "x-sluice-anything": "1", "x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-retry-on": "5xx",
              "x-envoy-internal": "true", "x-envoy-made-up": "1"}
    answer, sent = send(gate, protocol, "POST", APIS["chat"], data=body("chat", ALLOWED, "hi"), headers=sneaky)
    assert answer.status == 200, answer
    [request] = sent
    names = {name.lower(): value for name, value in request["headers"].items()}
    leaked = [name for name in sneaky if name in names and names[name] == sneaky[name]]
    assert leaked == []
    assert not [name for name in names if name.startswith("x-sluice-")]


def test_no_internal_header_reaches_any_attempt_of_a_fallback(routed):
    """A chain request whose first attempt fails is translated for Anthropic on the retry: no
    attempt carries an internal header, a client's imitation included."""
    fail = {"x-model-tier": "quality", "x-mock-fail-model": "allowed-big=503", "x-sluice-api": "chat",
            "x-sluice-cluster": "provider_openai"}
    for _ in range(30):
        answer, sent = send(routed, "h1", "POST", APIS["chat"], key=OPEN, data=body("chat", ALLOWED, "hi"),
                            headers=fail)
        if [r["path"] for r in sent] == ["/v1/chat/completions", "/v1/messages"]:
            break
    else:
        raise AssertionError("never fell back to Anthropic")
    assert answer.status == 200, answer
    for request in sent:
        assert not [name for name in request["headers"] if name.lower().startswith("x-sluice-")], request["headers"]


def test_query_strings_never_reach_the_access_log(gate):
    secret = f"sk-secret-{uuid.uuid4().hex}"
    before = len(gate.access_log())
    answer, _ = send(gate, "h1", "POST", f"{APIS['chat']}?api_key={secret}", data=body("chat", ALLOWED, "hi"))
    assert answer.status == 200
    lines = gate.wait_access_log(before + 1)
    assert lines[-1]["path"] == APIS["chat"]
    assert not [line for line in lines if secret in json.dumps(line)]


# --- the settings the guarantees depend on, in every shipped config ---------------------------

def hcm(config):
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    return f["typed_config"]
    raise AssertionError("no HTTP connection manager")


EDGE_SETTINGS = {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "REJECT_REQUEST",
                 "use_remote_address": True}


def test_the_envoy_bootstrap_sets_the_edge_settings():
    text = re.sub(r"\$\{\w+\}", "0", (ROOT / "envoy-config" / "gateway.yaml").read_text())
    manager = hcm(yaml.safe_load(text))
    for name, value in EDGE_SETTINGS.items():
        assert manager.get(name) == value, name
    assert manager["internal_address_config"]["cidr_ranges"], "no client may count as internal"
    first = manager["http_filters"][0]
    assert first["name"] == "edge_header_sanitizer"
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-envoy-"}}} in \
        first["typed_config"]["mutations"]["request_mutations"]
    log = manager["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert log["path"] == "%PATH(NQ)%"
    assert "%REQ(:PATH)%" not in json.dumps(manager["access_log"])


def istio_documents():
    for path in sorted((ROOT / "istio").glob("*.yaml")):
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def test_the_istio_bundle_sets_the_edge_settings():
    patches = [p for d in istio_documents() if d["kind"] == "EnvoyFilter" for p in d["spec"]["configPatches"]
               if p["applyTo"] == "NETWORK_FILTER"]
    merged = {}
    for p in patches:
        merged.update(p["patch"]["value"].get("typed_config", {}))
    for name, value in EDGE_SETTINGS.items():
        if name != "use_remote_address":  # Istio sets it on gateways itself
            assert merged.get(name) == value, name
    kustomization = yaml.safe_load((ROOT / "istio" / "kustomization.yaml").read_text())
    assert "edge-settings.yaml" in kustomization["resources"]
    filters = [p for d in istio_documents() if d["kind"] == "EnvoyFilter" for p in d["spec"]["configPatches"]
               if p["applyTo"] == "HTTP_FILTER" and p["patch"]["value"].get("name") == "edge_header_sanitizer"]
    assert filters and filters[0]["patch"]["operation"] == "INSERT_FIRST"


def test_the_envoy_gateway_example_sets_the_edge_settings():
    docs = [d for d in yaml.safe_load_all((ROOT / "envoy-config" / "envoy-gateway-extension-policy.yaml").read_text()) if d]
    [policy] = [d for d in docs if d["kind"] == "ClientTrafficPolicy"]
    assert policy["spec"]["path"] == {"escapedSlashesAction": "RejectRequest", "disableMergeSlashes": False}
    removed = policy["spec"]["headers"]["earlyRequestHeaders"]["remove"]
    assert {"x-envoy-upstream-rq-timeout-ms", "x-envoy-retry-on", "x-envoy-internal"} <= set(removed)


# --- 4. the PII scrubber scans every string, in every schema ----------------------------------

EVERYWHERE = {
    "chat-tool-description": ("chat", {"model": ALLOWED, "messages": [{"role": "user", "content": "hi"}],
                                       "tools": [{"type": "function", "function": {
                                           "name": "mail", "description": f"writes to {EMAIL}",
                                           "parameters": {"type": "object", "properties": {
                                               "to": {"type": "string", "description": f"e.g. {EMAIL}"}}}}}]}),
    "chat-name-user-stop": ("chat", {"model": ALLOWED, "user": EMAIL, "stop": [EMAIL],
                                     "messages": [{"role": "User", "name": EMAIL, "content": "hi"}]}),
    "chat-function-role": ("chat", {"model": ALLOWED, "messages": [{"role": "function", "name": "f", "content": EMAIL}]}),
    "chat-unknown-part-key": ("chat", {"model": ALLOWED, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "note": {"deep": [[EMAIL]]}}]}]}),
    "chat-apostrophe": ("chat", {"model": ALLOWED, "messages": [{"role": "user", "content": "I am o'brien@example.com"}]}),
    "responses-tool-output": ("responses", {"model": ALLOWED, "input": [
        {"type": "function_call_output", "call_id": "c1", "output": f"sent to {EMAIL}"}]}),
    "messages-document-metadata": ("messages", {"model": ALLOWED, "max_tokens": 16, "metadata": {"user_id": EMAIL},
                                                "messages": [{"role": "user", "content": [
                                                    {"type": "document", "source": {"type": "text",
                                                                                    "media_type": "text/plain",
                                                                                    "data": f"contact {EMAIL}"}}]}]}),
    "completions-nested-prompt": ("completions", {"model": ALLOWED, "prompt": [[EMAIL]], "suffix": EMAIL}),
    "embeddings-user": ("embeddings", {"model": ALLOWED, "input": "hi", "user": EMAIL}),
    "gemini-system-and-call": ("gemini", {"systemInstruction": {"parts": [{"text": f"ops: {EMAIL}"}]}, "contents": [
        {"role": "model", "parts": [{"functionCall": {"name": "mail", "args": {"to": EMAIL}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "mail", "response": {"output": f"sent to {EMAIL}"}}}]}]}),
    "gemini-tool-declaration": ("gemini", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [
        {"functionDeclarations": [{"name": "mail", "description": f"writes to {EMAIL}"}]}]}),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", EVERYWHERE)
def test_every_string_is_scanned_in_every_schema(gate, case, protocol):
    api, payload = EVERYWHERE[case]
    answer, sent = send(gate, protocol, "POST", api_path(api), data=json.dumps(payload).encode())
    assert answer.status == 200, answer
    [request] = sent
    assert EMAIL not in request["body"] and "o'brien@example.com" not in request["body"], request["body"]
    assert "<EMAIL_1>" in request["body"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", EVERYWHERE)
def test_every_string_is_shown_to_the_prompt_guard_in_every_schema(gate, case, protocol):
    api, payload = EVERYWHERE[case]
    marked = json.loads(json.dumps(payload).replace(EMAIL, "[[block:hidden]]").replace("o'brien@example.com", "[[block:hidden]]"))
    answer, sent = send(gate, protocol, "POST", api_path(api), data=json.dumps(marked).encode())
    assert answer.status == 400, answer
    assert answer.json()["error"]["code"] == "content_filter"
    assert sent == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_duplicate_members_anywhere_are_400(gate, api, protocol):
    text = body(api, ALLOWED, "hi").decode()
    # A second copy of a nested member: parsers disagree on which one wins.
    member = {"chat": "content", "messages": "content", "count_tokens": "content", "gemini": "text"}.get(api)
    doubled = text.replace('"hi"', f'"hi", "{member}": "{EMAIL}"', 1) if member else \
        text[:-1] + f', "model": "{FORBIDDEN}"}}'
    answer, sent = send(gate, protocol, "POST", api_path(api), data=doubled.encode())
    assert answer.status == 400, answer
    assert sent == []


# --- 5. the allow-list holds for the model a request is finally sent to ------------------------

LIMITED = "sk-routed-limited"   # may use `allowed-*`
OPEN = "sk-routed-open"         # any model
ROUTED_BUDGET = {
    "keys": [key_entry(LIMITED, "limited", team="red", models=["allowed-*"]),
             key_entry(OPEN, "open", team="red")],
    "limits": [{"name": "cheap-only", "scope": "key", "kind": "usd", "window": "day", "limit": 0,
                "match": {"metadata": {"case": "downgrade"}}, "action": "downgrade",
                "downgrade_to": "forbidden-cheap"},
               {"name": "usd-day", "scope": "key", "kind": "usd", "window": "day", "limit": 100,
                "match": {"metadata": {"case": "usd"}}}],
    "redis_keys": {"enabled": True},
    "unpriced": {"price": {"input": 1.0, "output": 2.0}},
}
# `premium` is not in the limited key's allow-list, but one of its targets is: a rule routing
# there may only use that target, and none of its fallbacks.
ROUTED_MODELS = {
    "models": {
        "premium": {"targets": [
            {"provider": "openai", "model": "allowed-big", "cluster": "chain_openai_anthropic"},
            {"provider": "openai", "model": "forbidden-big", "cluster": "chain_openai_anthropic"}],
            "fallbacks": [{"provider": "anthropic", "model": "forbidden-claude"}]},
    },
    "rules": [{"name": "tier", "when": {"header": {"name": "x-model-tier", "values": ["quality"]}},
               "route_to": "premium"}],
    "unknown_models": "pass",
}


@pytest.fixture(scope="module")
def routed():
    yield from running(configs={"sluice.budget_enforcer": ROUTED_BUDGET, "sluice.model_rewriter": ROUTED_MODELS},
                       provider_keys={"OPENAI_API_KEY": PROVIDER_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})


def models_sent(sent):
    return [json.loads(r["body"]).get("model") for r in sent]


def test_rules_never_route_outside_the_allow_list(routed):
    tier = {"x-model-tier": "quality"}
    limited, unlimited = set(), set()
    for _ in range(12):
        answer, sent = send(routed, "h1", "POST", APIS["chat"], key=LIMITED, data=body("chat", ALLOWED, "hi"),
                            headers=tier)
        assert answer.status == 200, answer
        limited.update(models_sent(sent))
        answer, sent = send(routed, "h1", "POST", APIS["chat"], key=OPEN, data=body("chat", ALLOWED, "hi"),
                            headers=tier)
        unlimited.update(models_sent(sent))
    assert limited == {"allowed-big"}
    assert unlimited == {"allowed-big", "forbidden-big"}  # the rule and both targets do apply


def test_fallbacks_never_reach_a_model_outside_the_allow_list(routed):
    fail = {"x-model-tier": "quality", "x-mock-fail-model": "allowed-big=503"}
    answer, sent = send(routed, "h1", "POST", APIS["chat"], key=LIMITED, data=body("chat", ALLOWED, "hi"),
                        headers=fail)
    assert answer.status != 200, answer
    assert "forbidden-claude" not in models_sent(sent)
    # The same chain falls back for a key that may use every model.
    for _ in range(20):
        answer, sent = send(routed, "h1", "POST", APIS["chat"], key=OPEN, data=body("chat", ALLOWED, "hi"),
                            headers={**fail, "x-mock-fail-model": "forbidden-big=503"})
        if "forbidden-claude" in models_sent(sent):
            break
    else:
        raise AssertionError("the open key never fell back")


def test_a_downgrade_never_leaves_the_allow_list(routed):
    key = f"sk-routed-{uuid.uuid4().hex}"
    routed.redis("SET", f"sluice:key:{key_entry(key, 'x')['sha256']}",
                 json.dumps({"alias": "downgraded", "models": ["allowed-*"], "metadata": {"case": "downgrade"}}))
    answer, sent = send(routed, "h1", "POST", APIS["chat"], key=key, data=body("chat", ALLOWED, "hi"))
    assert answer.status == 429, answer
    assert sent == []


# --- 8. no model is free against a USD limit ---------------------------------------------------

def test_an_unpriced_model_is_refused_under_a_usd_limit_without_a_default_price():
    config = {"keys": [key_entry(OPEN, "open")],
              "limits": [{"name": "usd", "scope": "key", "kind": "usd", "window": "day", "limit": 1.0}]}
    with Stack(configs={"sluice.budget_enforcer": config}, concurrency=1,
               modules=["sluice.budget_enforcer", "sluice.token_counter"]) as s:
        for api in APIS:
            answer, sent = send(s, "h1", "POST", api_path(api, "self-hosted-llama"), key=OPEN, data=body(api, "self-hosted-llama", "hi"))
            if api == "count_tokens":
                # Counting tokens costs nothing, whatever the model's price.
                assert answer.status == 200 and len(sent) == 1, (api, answer)
                continue
            assert answer.status == 403, (api, answer)
            assert answer.json()["error"]["code"] == "model_unpriced"
            assert sent == []
        answer, _ = send(s, "h1", "POST", APIS["chat"], key=OPEN, data=body("chat", "gpt-4o-mini", "hi"))
        assert answer.status == 200
        assert not s.vm_failures()


def test_an_unpriced_model_is_charged_at_the_default_price(routed):
    key = f"sk-routed-{uuid.uuid4().hex}"
    routed.redis("SET", f"sluice:key:{key_entry(key, 'x')['sha256']}", json.dumps({"alias": "unpriced-user", "metadata": {"case": "usd"}}))
    before = routed.metric("sluice_budget_unpriced_total", how="default_price")
    spent = routed.metric("sluice_budget_spend_micro_usd_total", key="unpriced-user")
    answer, _ = send(routed, "h1", "POST", APIS["chat"], key=key, data=body("chat", "self-hosted-llama", "hi"),
                     headers={"x-mock-prompt-tokens": "1000", "x-mock-completion-tokens": "500"})
    assert answer.status == 200
    wait_until(lambda: routed.metric("sluice_budget_unpriced_total", how="default_price") == before + 1,
               "the unpriced answer counted", 10)
    # 1000 prompt tokens at $1/M and 500 completion tokens at $2/M: $0.002.
    assert routed.metric("sluice_budget_spend_micro_usd_total", key="unpriced-user") == spent + 2000
    charged = lambda: sum(int(routed.redis("GET", k) or 0)  # noqa: E731
                          for k in routed.redis("KEYS", "sluice:limit:usd-day:key:unpriced-user:*").split())
    wait_until(lambda: charged() == 2000, "the default price charged in Redis", 10)
    wait_until(lambda: any(l["key"] == "unpriced-user" and l["unpriced"] == "true"
                           for l in routed.access_log()), "the unpriced charge in the access log", 10)


def reversed_chain(config):
    """Adds `chain_anthropic_openai` (Anthropic first, then OpenAI) and its route."""
    clusters = config["static_resources"]["clusters"]
    chain = copy.deepcopy(next(c for c in clusters if c["name"] == "chain_openai_anthropic"))
    chain["name"] = "chain_anthropic_openai"
    chain["cluster_type"]["typed_config"]["clusters"] = ["provider_anthropic", "provider_openai"]
    clusters.append(chain)
    routes = connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    route = copy.deepcopy(routes[0])
    route["match"]["headers"][0]["string_match"]["exact"] = route["route"]["cluster"] = "chain_anthropic_openai"
    routes.insert(0, route)


def test_a_retry_after_a_translated_attempt_is_still_chat_and_carries_no_internal_header():
    """Anthropic first (the chat request goes out as Messages, its path changed), then OpenAI:
    the retry knows it is a chat request from filter state, not from a header it would carry."""
    models = {"models": {"rev": {"targets": [{"provider": "anthropic", "model": "claude-x",
                                              "cluster": "chain_anthropic_openai"}],
                                 "fallbacks": [{"provider": "openai", "model": "gpt-x"}]}}}
    with Stack(configs={"sluice.model_rewriter": models}, concurrency=1, patch=reversed_chain,
               provider_keys={"OPENAI_API_KEY": PROVIDER_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}) as s:
        answer, sent = send(s, "h1", "POST", APIS["chat"], key=DEMO_KEY, data=body("chat", "rev", "hi"),
                            headers={"x-mock-fail-model": "claude-x=503"})
        assert answer.status == 200, answer
        assert answer.json()["object"] == "chat.completion"
        assert [r["path"] for r in sent] == ["/v1/messages", "/v1/chat/completions"]
        assert models_sent(sent) == ["claude-x", "gpt-x"]
        for request in sent:
            assert not [n for n in request["headers"] if n.lower().startswith("x-sluice-")], request["headers"]
        assert not s.vm_failures()
