"""The Istio bundle (`kubectl apply -k istio/`) and the Envoy Gateway policies: every manifest
conforms to the upstream schema of its API with unknown fields refused, as `kubectl apply
--validate=strict` does (tests/data/crds, harness/crds.py); the WasmPlugins run in the chain order of
architecture.md, each is pinned to the digest of the image built from this tree, their configs
match the modules' schemas, and every backend they call is declared with a traffic policy."""

import json
import re

import jsonschema
import pytest
import yaml

from harness import crds, oci
from harness.stack import ROOT, Stack, dicts

ISTIO = ROOT / "istio"
# Every manifest we ship for a Kubernetes API server: the Istio bundle and its examples, and the
# Envoy Gateway policies. (Envoy bootstraps are checked by `envoy --mode validate`, test_configs.)
SHIPPED = [*sorted(f"istio/{p.name}" for p in ISTIO.glob("*.yaml") if p.name not in ("kustomization.yaml", "pins.yaml")),
           "envoy-config/envoy-gateway-extension-policy.yaml"]


def manifests(name):
    return [d for d in yaml.safe_load_all((ISTIO / name).read_text()) if d]


def bundle():
    kustomization = yaml.safe_load((ISTIO / "kustomization.yaml").read_text())
    return kustomization, [d for r in kustomization["resources"] for d in manifests(r)]


def identity(doc):
    return doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]


def merged(base, patch):
    """A strategic-merge patch as the bundle uses them: objects merged field by field."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in patch.items()}}
    return patch


def built():
    """What `kubectl apply -k istio/` sends: the resources with the patches applied (a patch that
    matches no resource fails, as kustomize does)."""
    kustomization, docs = bundle()
    by_id = {identity(d): d for d in docs}
    for entry in kustomization["patches"]:
        for patch in manifests(entry["path"]):
            assert identity(patch) in by_id, f"{entry['path']}: {identity(patch)} patches nothing"
            by_id[identity(patch)] = merged(by_id[identity(patch)], patch)
    return list(by_id.values())


def conforms(doc):
    if doc["kind"] == "ConfigMap":
        return [] if set(doc) == {"apiVersion", "kind", "metadata", "data"} else [f"ConfigMap fields {sorted(doc)}"]
    return crds.problems(doc)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_manifest_conforms_strictly_to_its_upstream_schema(name):
    in_bundle = {identity(d): d for d in built()}
    for doc in yaml.safe_load_all((ROOT / name).read_text()):
        if doc:
            # Bundle resources are checked as applied, with their pins.
            doc = in_bundle.get(identity(doc), doc)
            assert conforms(doc) == [], f"{name}: {identity(doc)}"


def test_the_applied_bundle_conforms_and_every_plugin_is_pinned():
    docs = built()
    assert [conforms(d) for d in docs] == [[] for _ in docs]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d["spec"]["sha256"]) for d in docs if d["kind"] == "WasmPlugin")


def test_every_schema_is_the_upstream_one_for_an_api_we_ship():
    shipped = {(d["apiVersion"], d["kind"]) for name in SHIPPED for d in yaml.safe_load_all((ROOT / name).read_text())
               if d and d["kind"] != "ConfigMap"}
    assert shipped == crds.known(), "tests/data/crds: add or drop a schema (python -m harness.crds --update)"
    for path in crds.DIRECTORY.glob("*.json"):
        source = json.loads(path.read_text())["source"]
        assert any(source == f"https://github.com/{r}/blob/{c}/{f}" for r, c, f, _ in crds.SOURCES), path.name


def test_the_checker_refuses_what_the_api_server_would():
    """Unknown fields anywhere, values outside an enum, wrong types, and a digest beside the image
    instead of inside it (where Envoy Gateway would drop it)."""
    [plugin] = [d for d in built() if identity(d)[2] == "sluice-token-counter"]
    bad = merged(plugin, {"spec": {"priorty": 1, "phase": "EARLY", "vmConfig": {"env": [{"name": "X", "valueFrom": "SECRET"}]}},
                          "metadata": {"owner": "me"}})
    found = "\n".join(crds.problems(bad))
    for expected in ["'priorty' was unexpected", "'EARLY' is not one of", "'SECRET' is not one of", "'owner' was unexpected"]:
        assert expected in found, found
    assert crds.problems(merged(plugin, {"spec": {"priority": "high"}})) != []
    [policy] = eg_documents("EnvoyExtensionPolicy")
    code = policy["spec"]["wasm"][0]["code"]
    beside = {**code, "image": {k: v for k, v in code["image"].items() if k != "sha256"}, "sha256": code["image"]["sha256"]}
    wrong = merged(policy, {"spec": {"wasm": [{**policy["spec"]["wasm"][0], "code": beside}]}})
    assert any("'sha256' was unexpected" in p for p in crds.problems(wrong)), crds.problems(wrong)
    assert crds.problems({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}) != []


def test_the_bundle_is_complete_and_has_no_duplicates():
    kustomization, docs = bundle()
    for path in kustomization["resources"] + [p["path"] for p in kustomization["patches"]]:
        assert (ISTIO / path).exists(), path
    for generator in kustomization["configMapGenerator"]:
        for path in generator["files"]:
            json.loads((ISTIO / path).read_text())
    ids = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids)), ids
    # The examples are not in it: the Gateway API route and the waypoint are alternatives.
    assert "gateway-api-httproute.yaml" not in kustomization["resources"]
    assert "waypoint-example.yaml" not in kustomization["resources"]


PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]
CHAIN = ["sluice-budget-enforcer", "sluice-pii-scrubber", "sluice-guard", "sluice-semantic-cache",
         "sluice-guard-answers", "sluice-model-rewriter", "sluice-token-counter"]
FAIL = {"sluice-budget-enforcer": "FAIL_CLOSE", "sluice-pii-scrubber": "FAIL_CLOSE", "sluice-guard": "FAIL_CLOSE",
        "sluice-semantic-cache": "FAIL_OPEN", "sluice-guard-answers": "FAIL_CLOSE", "sluice-model-rewriter": "FAIL_CLOSE",
        "sluice-token-counter": "FAIL_OPEN"}
# The module (plugins/<module>, image <module>:<tag>) of each plugin.
SCHEMA_OF = {"sluice-budget-enforcer": "budget-enforcer", "sluice-pii-scrubber": "pii-scrubber",
             "sluice-guard": "guard", "sluice-semantic-cache": "semantic-cache", "sluice-guard-answers": "guard",
             "sluice-model-rewriter": "model-rewriter", "sluice-token-counter": "token-counter"}


def test_wasm_plugins_run_in_the_chain_order_with_their_failure_policy_and_configs():
    _, docs = bundle()
    plugins = [d for d in docs if d["kind"] == "WasmPlugin"]
    # Istio orders by phase, then by descending priority within a phase.
    order = sorted(plugins, key=lambda d: (PHASES.index(d["spec"]["phase"]), -d["spec"].get("priority", 0)))
    assert [d["metadata"]["name"] for d in order] == CHAIN
    for plugin in plugins:
        name = plugin["metadata"]["name"]
        assert plugin["spec"]["failStrategy"] == FAIL[name], name
        schema = json.loads((ROOT / "plugins" / SCHEMA_OF[name] / "config.schema.json").read_text())
        jsonschema.validate(plugin["spec"].get("pluginConfig", {}), schema)
        assert plugin["spec"]["url"].startswith("oci://")
    kustomization = (ISTIO / "kustomization.yaml").read_text()
    for name, strategy in FAIL.items():  # the choice is explained where it is made
        assert re.search(rf"{strategy}\s+\S", kustomization), strategy


def test_every_wasm_plugin_is_pinned_to_the_image_built_from_this_tree(tmp_path):
    _, docs = bundle()
    pins = {d["metadata"]["name"]: d["spec"]["sha256"] for d in manifests("pins.yaml")}
    assert set(pins) == {d["metadata"]["name"] for d in docs if d["kind"] == "WasmPlugin"}
    built = oci.build_all(Stack(workdir=tmp_path).wasm_dir, tmp_path / "oci")
    current = {name: r["image"].split(":")[1] for r in built
               for name in oci.PLUGIN_NAMES.get(r["module"], ["sluice-" + r["module"].replace("_", "-")])}
    stale = {name: pin for name, pin in pins.items() if current[name] != pin}
    assert not stale, f"istio/pins.yaml is stale for {sorted(stale)}: run `make pin`"


def remote_codes(value):
    """Every `vm_config.code.remote` below a value."""
    return [node["remote"] for node in dicts(value) if isinstance(node.get("remote"), dict) and "http_uri" in node["remote"]]


def test_every_module_an_envoy_filter_fetches_is_pinned_and_its_cluster_defined(tmp_path):
    """The provider adapter (an EnvoyFilter, fetched over HTTP): its sha256 is the module built
    from this tree (a placeholder fails), and the cluster it is fetched from exists."""
    _, docs = bundle()
    filters = [d for d in docs if d["kind"] == "EnvoyFilter"]
    remotes = [r for d in filters for r in remote_codes(d["spec"])]
    assert remotes, "the provider adapter is fetched by an EnvoyFilter"
    built = {f"sluice_{r['module']}.wasm": r["module_sha256"]
             for r in oci.build_all(Stack(workdir=tmp_path).wasm_dir, tmp_path / "oci")}
    clusters = {p["patch"]["value"]["name"] for d in filters for p in d["spec"]["configPatches"]
                if p["applyTo"] == "CLUSTER" and p["patch"]["operation"] == "ADD"}
    for remote in remotes:
        module = remote["http_uri"]["uri"].rsplit("/", 1)[-1]
        assert remote["sha256"] == built[module], f"{module}: stale or placeholder sha256, run `make pin`"
        assert remote["http_uri"]["cluster"] in clusters, remote["http_uri"]
        assert "example.com" not in remote["http_uri"]["uri"]


def test_every_backend_a_plugin_calls_is_declared_with_a_traffic_policy():
    _, docs = bundle()
    entries = {h: {p["number"] for p in d["spec"]["ports"]} for d in docs if d["kind"] == "ServiceEntry"
               for h in d["spec"]["hosts"]}
    policies = {d["spec"]["host"]: d["spec"]["trafficPolicy"] for d in docs if d["kind"] == "DestinationRule"}
    called = set()
    for plugin in (d for d in docs if d["kind"] == "WasmPlugin"):
        text = json.dumps(plugin["spec"].get("pluginConfig", {}))
        for port, host in re.findall(r"outbound\|(\d+)\|\|([\w.-]+)", text):
            called.add(host)
            assert int(port) in entries.get(host, set()), f"{host}:{port} has no ServiceEntry"
            assert "outlierDetection" in policies.get(host, {}), f"{host} has no DestinationRule"
    assert called == {"redis-bridge.sluice.internal", "embedder.sluice.internal", "moderation.sluice.internal",
                      "llama-guard.sluice.internal", "policy.sluice.internal"}


def test_the_waypoint_example_targets_its_gateway():
    docs = manifests("waypoint-example.yaml")
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    assert gateway["spec"]["gatewayClassName"] == "istio-waypoint"
    for plugin in (d for d in docs if d["kind"] == "WasmPlugin"):
        assert "selector" not in plugin["spec"]
        assert plugin["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                 "name": gateway["metadata"]["name"]}]
        assert plugin["metadata"]["namespace"] == gateway["metadata"]["namespace"]


# --- Envoy Gateway -------------------------------------------------------------------------------

def eg_documents(kind):
    return [d for d in yaml.safe_load_all((ROOT / "envoy-config/envoy-gateway-extension-policy.yaml").read_text())
            if d and d["kind"] == kind]


def test_envoy_gateway_policy_runs_the_chain_pinned_and_configured():
    [policy] = eg_documents("EnvoyExtensionPolicy")
    assert (policy["apiVersion"], policy["kind"]) == ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy")
    wasm = policy["spec"]["wasm"]
    assert [w["name"].replace("sluice.", "sluice-").replace("_", "-") for w in wasm] == CHAIN
    pins = {d["metadata"]["name"]: d["spec"]["sha256"] for d in manifests("pins.yaml")}
    for entry in wasm:
        name = entry["name"].replace("sluice.", "sluice-").replace("_", "-")
        assert entry["failOpen"] == (FAIL[name] == "FAIL_OPEN"), name
        assert entry["code"]["image"]["sha256"] == pins[name], f"{name}: run `make pin`"
        assert entry["code"]["image"]["url"].split("/")[-1].startswith(SCHEMA_OF[name] + ":")
        schema = json.loads((ROOT / "plugins" / SCHEMA_OF[name] / "config.schema.json").read_text())
        jsonschema.validate(entry["config"], schema)
