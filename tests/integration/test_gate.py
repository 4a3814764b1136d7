"""Every way around the gate, tested as classes in a real Envoy with the whole chain: requests
that end in trailers, percent-encoded and odd paths, unknown paths and methods, internal headers,
secrets in logs. Each case runs on every API path the modules handle, over HTTP/1.1 and HTTP/2
(h2c), JSON and streaming; the mock provider records everything that reaches it, so "refused"
also means "never sent"."""

import json
import re
import uuid

import pytest
import requests
import yaml

from harness import wire
from harness.procs import wait_until
from harness.stack import ROOT, Stack, key_entry

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
}
PROTOCOLS = ["h1", "h2"]


def body(api, model, text, stream=False):
    b = {
        "chat": {"model": model, "messages": [{"role": "user", "content": text}]},
        "completions": {"model": model, "prompt": text},
        "embeddings": {"model": model, "input": text},
        "responses": {"model": model, "input": text},
        "messages": {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": text}]},
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


@pytest.fixture(scope="module")
def gate():
    with Stack(budget_config=BUDGET, provider_keys={"OPENAI_API_KEY": PROVIDER_KEY,
                                                    "ANTHROPIC_API_KEY": ANTHROPIC_KEY},
               patch=adapter_passthrough) as s:
        yield s
        assert not s.vm_failures()


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
    answer, sent = send(gate, protocol, "POST", APIS[api], key=UNKNOWN, data=body(api, ALLOWED, "hi"),
                        trailers=TRAILERS)
    assert answer.status == 401, answer
    assert sent == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_trailers_do_not_skip_the_model_allow_list(gate, protocol, api):
    answer, sent = send(gate, protocol, "POST", APIS[api], data=body(api, FORBIDDEN, "hi"), trailers=TRAILERS)
    assert answer.status == 403, answer
    assert answer.json()["error"]["code"] == "model_not_allowed"
    assert sent == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("api", APIS)
def test_trailers_do_not_skip_the_pii_scrubber(gate, protocol, api, stream):
    if stream and api == "embeddings":
        pytest.skip("embeddings do not stream")
    answer, sent = send(gate, protocol, "POST", APIS[api], data=body(api, ALLOWED, f"Mail {EMAIL} today", stream),
                        trailers=TRAILERS)
    assert answer.status == 200, answer
    [request] = sent
    assert EMAIL not in request["body"] and "<EMAIL_1>" in request["body"]
    expected = ("x-api-key", ANTHROPIC_KEY) if api == "messages" else ("authorization", f"Bearer {PROVIDER_KEY}")
    assert header(request, expected[0]) == expected[1]


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
