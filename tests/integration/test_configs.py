"""Shipped configuration stays valid and consistent: Envoy bootstrap, Istio manifests, schemas."""

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.stack import ROOT, Stack, connection_manager, envoy_binary, keep_modules, use_real_providers

SCHEMA = json.loads((ROOT / "plugins/token-counter/config.schema.json").read_text())
BUDGET_SCHEMA = json.loads((ROOT / "plugins/budget-enforcer/config.schema.json").read_text())


def label_keys():
    source = (ROOT / "shared/src/metrics.rs").read_text()
    block = re.search(r"pub const LABEL_KEYS: &\[&str\] =\s*&\[(.*?)\];", source, re.S).group(1)
    return re.findall(r'"([a-z_]+)"', block)


def envoy_validate(tmp_path, text):
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("variant", ["mock", "real-providers", "plain"])
def test_gateway_bootstrap_validates(tmp_path, variant):
    text = Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config()
    if variant == "real-providers":
        text = use_real_providers(text, {"openai": "sk-test", "anthropic": "ak-test"})
        config = yaml.safe_load(text)
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        assert clusters["provider_openai"]["transport_socket"]["typed_config"]["sni"] == "api.openai.com"
    if variant == "plain":
        text = keep_modules(text, [])
        assert "sluice.token_counter" not in text
    envoy_validate(tmp_path, text)


def shipped_check(check):
    """The shipped active health checks: every 30 s, 3 failures; an unhealthy host (or one in a
    cluster without traffic yet) checked again every 5 s."""
    return (check["interval"], check["unhealthy_threshold"], check["unhealthy_interval"], check["no_traffic_interval"],
            check["no_traffic_healthy_interval"]) == ("30s", 3, "5s", "5s", "30s")


def test_every_provider_chain_and_pool_cluster_has_a_retry_budget_and_health_checks(tmp_path):
    """No retry storms: every cluster a request can be routed to has a retry budget and
    thresholds; every provider and pool cluster an active health check."""
    config = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    routed = {c for c in clusters if c.startswith(("provider_", "chain_", "pool_"))}
    assert {"chain_seed", "chain_openai_anthropic", "pool_vllm", "provider_openai", "provider_bedrock"} <= routed
    for name in routed:
        thresholds = clusters[name]["circuit_breakers"]["thresholds"][0]
        assert thresholds["retry_budget"] == {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 3}, name
        assert thresholds["max_requests"] == thresholds["max_pending_requests"] == 1024, name
        if name.startswith(("pool_", "provider_")):
            (check,) = clusters[name]["health_checks"]
            assert shipped_check(check), name
    policy = clusters["pool_vllm"]["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.override_host"
    assert clusters["sluice_scrape"]["type"] == "ORIGINAL_DST"


def test_stats_tags_cover_every_label_key(tmp_path):
    keys = label_keys()
    gateway = (ROOT / "envoy-config/gateway.yaml").read_text()
    gateway_tags = re.findall(r"tag_name: (\w+),\s+regex: \"\(;(\w+)=", gateway)
    assert sorted(k for k, _ in gateway_tags) == sorted(keys)
    assert all(k == v for k, v in gateway_tags)
    istio = yaml.safe_load((ROOT / "istio/stats-tags.yaml").read_text())
    tags = json.loads(istio["data"]["custom_bootstrap.json"])["stats_config"]["stats_tags"]
    assert sorted(t["tag_name"] for t in tags) == sorted(keys)
    assert all(t["regex"] == f"(;{t['tag_name']}=([^;]*))" for t in tags)
    # The cost histogram's buckets, the same in both.
    envoy = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    envoy_buckets = envoy["stats_config"]["histogram_bucket_settings"]
    istio_buckets = json.loads(istio["data"]["custom_bootstrap.json"])["stats_config"]["histogram_bucket_settings"]
    assert envoy_buckets == istio_buckets == [{"match": {"contains": "sluice_request_cost_micro_usd"}, "buckets": [
        100, 1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000]}]


def test_shipped_plugin_configs_match_the_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    plugin = yaml.safe_load((ROOT / "istio/token-counter.yaml").read_text())
    assert plugin["kind"] == "WasmPlugin" and plugin["spec"]["phase"] == "STATS"
    jsonschema.validate(plugin["spec"]["pluginConfig"], SCHEMA)
    jsonschema.validate({}, SCHEMA)


def test_schema_rejects_what_the_plugin_rejects():
    for bad in [{"max_request_bytes": 0}, {"prices": {"m": {"input": -1, "output": 1}}}, {"respons_headers": True},
                {"prompt_estimate": "sometimes"}, {"preload_encodings": ["p50k_base"]}]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_budget_enforcer_manifests_match_the_schema():
    jsonschema.Draft202012Validator.check_schema(BUDGET_SCHEMA)
    plugin = next(d for d in yaml.safe_load_all((ROOT / "istio/budget-enforcer.yaml").read_text())
                  if d["kind"] == "WasmPlugin")
    assert plugin["spec"]["phase"] == "AUTHN" and plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    jsonschema.validate(plugin["spec"]["pluginConfig"], BUDGET_SCHEMA)
    jsonschema.validate(Stack(workdir="/tmp", listen_port=1, admin_port=2).configs["sluice.budget_enforcer"], BUDGET_SCHEMA)
    from harness.gateway import DEMO_BUDGET
    jsonschema.validate(DEMO_BUDGET, BUDGET_SCHEMA)
    jsonschema.validate({}, BUDGET_SCHEMA)


@pytest.mark.parametrize("bad", [
    {"keys": [{"sha256": "abc", "alias": "a"}]},
    {"limits": [{"name": "x", "scope": "key", "kind": "requests", "window": "week", "limit": 1}]},
    {"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "action": "downgrade"}]},
    {"limits": [{"name": "x", "scope": "key", "kind": "usd", "window": "day", "limit": 1, "downgrade_to": "m"}]},
    {"redis": {"timeout_ms": 0}},
    {"on_bridge_failure": "maybe"},
    {"local_limit_share": 0},
])
def test_budget_schema_rejects_what_the_plugin_rejects(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, BUDGET_SCHEMA)


# Each Sluice filter's schema; both guard filters (prompts, answers) run the guard module.
PLUGIN_OF = {"sluice.guard_answers": "guard"}
SCHEMAS = {name: json.loads((ROOT / f"plugins/{PLUGIN_OF.get(name, name.split('.')[1].replace('_', '-'))}"
                                    "/config.schema.json").read_text())
           for name in ["sluice.token_counter", "sluice.budget_enforcer", "sluice.model_rewriter",
                        "sluice.provider_adapter", "sluice.pii_scrubber", "sluice.guard", "sluice.guard_answers",
                        "sluice.semantic_cache"]}


def wasm_filters(config):
    """Every wasm filter of the bootstrap, downstream and upstream, as (name, plugin config)."""
    hcm = connection_manager(config)
    filters = list(hcm["http_filters"])
    for cluster in config["static_resources"]["clusters"]:
        for option in cluster.get("typed_extension_protocol_options", {}).values():
            filters += option.get("http_filters", [])
    return [(f["name"], json.loads(f["typed_config"]["config"]["configuration"]["value"]))
            for f in filters if f["name"].startswith("sluice.")]


def test_every_shipped_module_config_matches_its_schema(tmp_path):
    from harness.gateway import DEMO_BUDGET, DEMO_GUARDS, DEMO_MODELS
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    stacks = [Stack(workdir=tmp_path, listen_port=1, admin_port=2),
              Stack(configs={"sluice.budget_enforcer": DEMO_BUDGET, "sluice.model_rewriter": DEMO_MODELS, **DEMO_GUARDS},
                    workdir=tmp_path, listen_port=1, admin_port=2)]
    for stack in stacks:
        found = wasm_filters(yaml.safe_load(stack.envoy_config()))
        assert sorted(set(name for name, _ in found)) == sorted(SCHEMAS)
        for name, plugin_config in found:
            jsonschema.validate(plugin_config, SCHEMAS[name])


@pytest.mark.parametrize("name,bad", [
    ("sluice.model_rewriter", {"models": {"m": {"targets": []}}}),
    ("sluice.model_rewriter", {"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}],
                                                "strategy": "fastest"}}}),
    ("sluice.model_rewriter", {"models": {"m": {"targets": [{"provider": "p", "model": "x", "cluster": "c"}],
                                                "fallbacks": [{"provider": "q"}]}}}),
    ("sluice.provider_adapter", {"schema": "anthropic"}),
    ("sluice.provider_adapter", {"providers": {"a": {"schema": "vertex"}}}),
    ("sluice.provider_adapter", {"providers": {"a": {"schema": "gemini", "model_path": "/v1beta/models"}}}),
    ("sluice.provider_adapter", {"providers": {"a": {"api_key": "a", "api_key_env": "B"}}}),
    ("sluice.provider_adapter", {"providers": {"a b": {}}}),
    ("sluice.provider_adapter", {"providers": {"a": {"chat_path": "no-slash"}}}),
    ("sluice.guard", {"guards": [{"name": "g", "kind": "moderation", "cluster": "c"}]}),
    ("sluice.guard", {"guards": [{"name": "g", "kind": "judge", "cluster": "c", "authority": "a"}]}),
    ("sluice.guard", {"guards": [{"name": "g h", "kind": "webhook", "cluster": "c", "authority": "a"}]}),
    ("sluice.guard", {"guards": [{"name": "g", "kind": "webhook", "cluster": "c", "authority": "a", "timeout_ms": 0}]}),
    ("sluice.guard", {"guards": [{"name": "g", "kind": "moderation", "cluster": "c", "authority": "a",
                                  "categories": {"v": {"threshold": 2, "action": "block"}}}]}),
    ("sluice.guard", {"stream": {"mode": "later"}}),
    ("sluice.guard", {"routes": [{"match": {"apis": ["fax"]}}]}),
])
def test_schemas_reject_what_the_modules_reject(name, bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMAS[name])


def istio_documents(name):
    return list(yaml.safe_load_all((ROOT / "istio" / name).read_text()))


def patches(documents, apply_to):
    return [p for d in documents if d["kind"] == "EnvoyFilter" for p in d["spec"]["configPatches"]
            if p["applyTo"] == apply_to]


def test_istio_model_rewriter_manifests_are_valid_envoy_config(tmp_path):
    """The EnvoyFilter patches, applied to the gateway bootstrap, pass `envoy --mode validate`,
    and the module configs in them match their schemas and each other."""
    documents = istio_documents("request-buffer.yaml") + istio_documents("model-rewriter.yaml")
    plugin = next(d for d in documents if d["kind"] == "WasmPlugin")
    assert plugin["spec"]["phase"] == "AUTHZ"
    rewriter = plugin["spec"]["pluginConfig"]
    jsonschema.validate(rewriter, SCHEMAS["sluice.model_rewriter"])

    config = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    hcm = connection_manager(config)
    ours = {"envoy.filters.http.buffer", "envoy.filters.http.header_mutation"}
    filters = [f for f in hcm["http_filters"] if f["name"] not in ours]
    for patch in patches(documents, "HTTP_FILTER"):
        assert patch["patch"]["operation"] == "INSERT_BEFORE"
        filters.insert(len(filters) - 1, patch["patch"]["value"])  # before the router
    hcm["http_filters"] = filters
    assert [f["name"] for f in filters][-3:] == [*sorted(ours), "envoy.filters.http.router"]

    clusters = [p["patch"]["value"] for p in patches(documents, "CLUSTER")]
    for cluster in clusters:
        for option in cluster.get("typed_extension_protocol_options", {}).values():
            for f in option["http_filters"]:
                if f["name"] == "sluice.provider_adapter":
                    wasm = f["typed_config"]["config"]
                    jsonschema.validate(json.loads(wasm["configuration"]["value"]), SCHEMAS["sluice.provider_adapter"])
                    # Validation cannot fetch the module: the local build stands in for it.
                    wasm["vm_config"]["code"] = {"local": {"filename": str(Stack(workdir=tmp_path).wasm_dir /
                                                                           "sluice_provider_adapter.wasm")}}
    # Istio's own clusters replace the gateway's of the same name (the scrape cluster).
    added = {c["name"] for c in clusters}
    config["static_resources"]["clusters"] = [c for c in config["static_resources"]["clusters"]
                                              if c["name"] not in added] + clusters
    for cluster in clusters:
        if cluster["name"].startswith("sluice_") and cluster["name"] not in {"sluice_artifacts", "sluice_scrape"}:
            budget = cluster["circuit_breakers"]["thresholds"][0]["retry_budget"]
            assert budget["budget_percent"]["value"] == 20.0, cluster["name"]
        if cluster["name"] in {"sluice_openai", "sluice_anthropic", "sluice_gemini", "sluice_bedrock", "sluice_pool_vllm"}:
            (check,) = cluster["health_checks"]
            assert shipped_check(check), cluster["name"]

    routes = [p["patch"]["value"] for p in patches(documents, "HTTP_ROUTE")]
    hcm["route_config"]["virtual_hosts"][0]["routes"][:0] = routes
    routed = {r["match"]["headers"][0]["string_match"]["exact"]: r["route"]["cluster"] for r in routes}
    assert all(header == cluster for header, cluster in routed.items())
    targets = {t["cluster"] for m in rewriter["models"].values() for t in m["targets"]}
    assert targets <= set(routed), "every target cluster needs a route"
    chain = next(r for r in routes if r["route"]["cluster"] == "sluice_chain_openai_anthropic")
    assert chain["route"]["retry_policy"]["retriable_status_codes"] == [429, 500, 502, 503]
    for cluster in clusters:
        if "outlier_detection" in cluster:
            assert cluster["outlier_detection"]["consecutive_5xx"] == 3
    envoy_validate(tmp_path, yaml.safe_dump(config, sort_keys=False))


def test_istio_edge_settings_are_valid_envoy_config(tmp_path):
    """The edge settings (docs/threat-model.md), patched into a gateway bootstrap that lacks
    them, pass `envoy --mode validate`."""
    documents = istio_documents("edge-settings.yaml")
    config = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    hcm = connection_manager(config)
    for name in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action"):
        hcm.pop(name)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "edge_header_sanitizer"]
    [merge] = patches(documents, "NETWORK_FILTER")
    assert merge["patch"]["operation"] == "MERGE"
    settings = {k: v for k, v in merge["patch"]["value"]["typed_config"].items() if k != "@type"}
    assert set(settings) == {"normalize_path", "merge_slashes", "path_with_escaped_slashes_action"}
    hcm.update(settings)
    [first] = patches(documents, "HTTP_FILTER")
    assert first["patch"]["operation"] == "INSERT_FIRST"
    hcm["http_filters"].insert(0, first["patch"]["value"])
    envoy_validate(tmp_path, yaml.safe_dump(config, sort_keys=False))


def test_istio_jwt_authn_follows_the_sanitizer_and_is_valid_envoy_config(tmp_path):
    """jwt-authn.yaml's filter, in place of the gateway's own, right after the edge sanitizer
    (which removes client-sent payload headers in both configs), passes `envoy --mode
    validate`; the budget enforcer's Istio config reads the header it writes."""
    [insert] = patches(istio_documents("jwt-authn.yaml"), "HTTP_FILTER")
    assert insert["patch"]["operation"] == "INSERT_AFTER"
    assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "edge_header_sanitizer"
    jwt = insert["patch"]["value"]
    provider = jwt["typed_config"]["providers"]["sluice"]
    assert provider["forward"] is False and provider["forward_payload_header"] == "x-sluice-jwt-payload"
    [first] = patches(istio_documents("edge-settings.yaml"), "HTTP_FILTER")
    removed = [m["remove_on_match"]["key_matcher"] for m in first["patch"]["value"]["typed_config"]["mutations"][
        "request_mutations"]]
    assert {"exact": "x-sluice-jwt-payload"} in removed
    config = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    hcm = connection_manager(config)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("edge_header_sanitizer") + 1 == names.index("envoy.filters.http.jwt_authn")
    hcm["http_filters"][names.index("envoy.filters.http.jwt_authn")] = jwt
    # The issuer's cluster, which Istio makes from the ServiceEntry.
    config["static_resources"]["clusters"].append({
        "name": "outbound|443||issuer.example.com", "type": "STRICT_DNS", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "outbound|443||issuer.example.com", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "issuer.example.com", "port_value": 443}}}}]}]}})
    envoy_validate(tmp_path, yaml.safe_dump(config, sort_keys=False))
    budget = next(d for d in istio_documents("budget-enforcer.yaml") if d["kind"] == "WasmPlugin")
    assert budget["spec"]["pluginConfig"]["jwt"]["payload_header"] == "x-sluice-jwt-payload"
    jsonschema.validate(budget["spec"]["pluginConfig"], SCHEMAS["sluice.budget_enforcer"])


def test_gateway_api_example_routes_on_the_rewriter_header():
    documents = istio_documents("gateway-api-httproute.yaml")
    route = next(d for d in documents if d["kind"] == "HTTPRoute")
    header_rules = [r for r in route["spec"]["rules"] if "headers" in r["matches"][0]]
    assert {r["matches"][0]["headers"][0]["name"] for r in header_rules} == {"x-sluice-cluster"}
    assert any(len(r["backendRefs"]) > 1 and all("weight" in b for b in r["backendRefs"]) for r in header_rules)
    assert all(r["retry"]["codes"] == [429, 500, 502, 503] for r in header_rules)
    backends = {b["name"] for r in route["spec"]["rules"] for b in r["backendRefs"]}
    guarded = {d["spec"]["host"].split(".")[0] for d in documents if d["kind"] == "DestinationRule"
               and d["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 3}
    assert backends <= guarded


def test_pii_scrubber_manifest_matches_the_schema():
    plugin = istio_documents("pii-scrubber.yaml")[0]
    assert plugin["kind"] == "WasmPlugin" and plugin["spec"]["phase"] == "AUTHZ"
    assert plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    rewriter = next(d for d in istio_documents("model-rewriter.yaml") if d["kind"] == "WasmPlugin")
    assert plugin["spec"]["priority"] > rewriter["spec"]["priority"]  # scrubbed before routing
    jsonschema.validate(plugin["spec"]["pluginConfig"], SCHEMAS["sluice.pii_scrubber"])


@pytest.mark.parametrize("bad", [
    {"entities": {"EMAIL": "erase"}},
    {"patterns": [{"entity": "lower", "pattern": "x"}]},
    {"word_lists": [{"entity": "W", "words": []}]},
    {"roles": ["admin"]},
    {"output": "maybe"},
    {"hash_salt": "a", "hash_salt_env": "B"},
    {"max_request_bytes": 0},
])
def test_pii_schema_rejects_what_the_module_rejects(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMAS["sluice.pii_scrubber"])


def test_semantic_cache_manifest_matches_the_schema_and_sits_between_scrubber_and_rewriter(tmp_path):
    documents = istio_documents("semantic-cache.yaml")
    plugin = next(d for d in documents if d["kind"] == "WasmPlugin")
    assert plugin["spec"]["phase"] == "AUTHZ" and plugin["spec"]["failStrategy"] == "FAIL_OPEN"
    scrubber = istio_documents("pii-scrubber.yaml")[0]
    rewriter = next(d for d in istio_documents("model-rewriter.yaml") if d["kind"] == "WasmPlugin")
    # Within a phase, higher priority runs first: scrubbed, then cached, then routed.
    assert scrubber["spec"]["priority"] > plugin["spec"]["priority"] > rewriter["spec"]["priority"]
    jsonschema.validate(plugin["spec"]["pluginConfig"], SCHEMAS["sluice.semantic_cache"])
    from harness.gateway import DEMO_CACHE
    jsonschema.validate(DEMO_CACHE, SCHEMAS["sluice.semantic_cache"])
    # The buffer the cache needs (shared with the model rewriter) puts Envoy's buffer filter before
    # the router.
    buffer = istio_documents("request-buffer.yaml")
    assert [d["metadata"]["name"] for d in buffer] == ["sluice-request-buffer"]
    config = yaml.safe_load(Stack(workdir=tmp_path, listen_port=1, admin_port=2).envoy_config())
    hcm = connection_manager(config)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.buffer"]
    [patch] = patches(buffer, "HTTP_FILTER")
    assert patch["patch"]["value"]["name"] == "envoy.filters.http.buffer"
    hcm["http_filters"].insert(len(hcm["http_filters"]) - 1, patch["patch"]["value"])
    envoy_validate(tmp_path, yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize("bad", [
    {"threshold": 0}, {"threshold": 1.2}, {"namespace": "tenant"}, {"mode": "fuzzy"}, {"ttl_seconds": 0},
    {"lsh_bits": 9}, {"embedding": {"path": "v1/embeddings"}}, {"routes": [{"threshold": 2}]},
    {"routes": [{"path_prefix": "support"}]}, {"treshold": 0.9}, {"close_margin": 0.9}, {"verify": {}},
    {"verify": {"cluster": "v", "authority": "v", "kind": "judge"}}, {"verify": {"cluster": "v", "authority": "v",
    "timeout_ms": 0}}, {"contradicted_threshold": 1.2}, {"evict_after": 0},
])
def test_cache_schema_rejects_what_the_module_rejects(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMAS["sluice.semantic_cache"])


def test_every_integration_test_file_belongs_to_a_make_tier():
    """`make test-integration [MODULE=...]` and `make test-deploy` together run every file."""
    makefile = (ROOT / "Makefile").read_text()
    listed = {f for line in re.findall(r"^(?:TESTS_[a-z-]+|DEPLOY_TESTS) := (.*)$", makefile, re.M)
              for f in line.split()}
    files = {p.name for p in (ROOT / "tests" / "integration").glob("test_*.py")}
    assert files == listed, f"not in a tier: {sorted(files - listed)}; gone: {sorted(listed - files)}"
    quality = set(re.search(r"^QUALITY_TESTS := (.*)$", makefile, re.M).group(1).split())
    assert quality == {p.name for p in (ROOT / "tests" / "quality").glob("test_*.py")}
    # The bundle pass runs ALL_INTEGRATION: every module's tier must be in it.
    tiers = set(re.findall(r"^TESTS_([a-z-]+) :=", makefile, re.M))
    bundled = set(re.search(r"^ALL_INTEGRATION := .*foreach m,([a-z -]+),", makefile, re.M).group(1).split())
    assert tiers == bundled, f"tiers missing from ALL_INTEGRATION: {sorted(tiers - bundled)}"
