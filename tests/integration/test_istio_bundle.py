"""The Istio bundle (`kubectl apply -k istio/`): every manifest uses only fields and values of the
Istio / Kubernetes / Gateway APIs it declares, the WasmPlugins run in the chain order of
architecture.md, each is pinned to the digest of the image built from this tree, their configs
match the modules' schemas, and every backend they call is declared with a traffic policy."""

import json
import re

import jsonschema
import pytest
import yaml

from harness import oci
from harness.stack import ROOT, Stack

ISTIO = ROOT / "istio"
ANY = None  # any value below this field (free-form: plugin configs, Envoy config in patches)


def enum(*values):
    return set(values)


DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|m|h)$")
OUTLIER = {"consecutive5xxErrors": int, "consecutiveGatewayErrors": int, "consecutiveLocalOriginFailures": int,
           "interval": DURATION, "baseEjectionTime": DURATION, "maxEjectionPercent": int, "minHealthPercent": int,
           "splitExternalLocalOriginErrors": bool}
TARGET_REF = {"group": str, "kind": str, "name": str, "namespace": str}
# The fields of each API this project uses, as the APIs define them (names, nesting, enums).
API = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): {
        "selector": {"matchLabels": ANY}, "targetRef": TARGET_REF, "targetRefs": [TARGET_REF],
        "url": re.compile(r"^(oci|https?|file)://"), "sha256": re.compile(r"^[0-9a-f]{64}$"),
        "imagePullPolicy": enum("UNSPECIFIED_POLICY", "IfNotPresent", "Always"), "imagePullSecret": str,
        "pluginConfig": ANY, "pluginName": str, "phase": enum("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"),
        "priority": int, "failStrategy": enum("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"),
        "vmConfig": {"env": [{"name": str, "valueFrom": enum("INLINE", "HOST"), "value": str}]},
        "match": ANY, "type": enum("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"),
    },
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): {
        "workloadSelector": {"labels": ANY}, "targetRefs": [TARGET_REF], "priority": int,
        "configPatches": [{
            "applyTo": enum("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                            "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "BOOTSTRAP",
                            "LISTENER_FILTER"),
            "match": {"context": enum("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"), "proxy": ANY,
                      "listener": ANY, "routeConfiguration": ANY, "cluster": ANY},
            "patch": {"operation": enum("MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST",
                                        "REPLACE"),
                      "value": ANY, "filterClass": enum("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS")},
        }],
    },
    ("networking.istio.io/v1", "ServiceEntry"): {
        "hosts": [str], "addresses": [str], "exportTo": [str], "subjectAltNames": [str],
        "ports": [{"number": int, "protocol": enum("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", "MONGO"),
                   "name": str, "targetPort": int}],
        "location": enum("MESH_EXTERNAL", "MESH_INTERNAL"),
        "resolution": enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
        "endpoints": [{"address": str, "ports": ANY, "labels": ANY, "network": str, "locality": str, "weight": int}],
        "workloadSelector": {"labels": ANY},
    },
    ("networking.istio.io/v1", "DestinationRule"): {
        "host": str, "exportTo": [str], "subsets": ANY, "workloadSelector": {"labels": ANY},
        "trafficPolicy": {
            "loadBalancer": ANY, "tls": ANY, "portLevelSettings": ANY,
            "connectionPool": {
                "tcp": {"maxConnections": int, "connectTimeout": DURATION, "tcpKeepalive": ANY,
                        "maxConnectionDuration": DURATION, "idleTimeout": DURATION},
                "http": {"http1MaxPendingRequests": int, "http2MaxRequests": int, "maxRequestsPerConnection": int,
                         "maxRetries": int, "idleTimeout": DURATION, "h2UpgradePolicy": str,
                         "useClientProtocol": bool, "maxConcurrentStreams": int}},
            "outlierDetection": OUTLIER,
        },
    },
    ("v1", "ConfigMap"): None,  # checked as a whole below (`data` only)
    ("gateway.networking.k8s.io/v1", "Gateway"): {
        "gatewayClassName": str, "addresses": ANY, "infrastructure": ANY,
        "listeners": [{"name": str, "port": int, "protocol": enum("HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE"),
                       "hostname": str, "tls": ANY, "allowedRoutes": ANY}],
    },
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): {
        "parentRefs": [{"group": str, "kind": str, "name": str, "namespace": str, "sectionName": str, "port": int}],
        "hostnames": [str],
        "rules": [{"name": str, "matches": ANY, "filters": ANY,
                   "backendRefs": [{"group": str, "kind": str, "name": str, "namespace": str, "port": int,
                                    "weight": int, "filters": ANY}],
                   "timeouts": {"request": DURATION, "backendRequest": DURATION},
                   "retry": {"codes": [int], "attempts": int, "backoff": DURATION},
                   "sessionPersistence": ANY}],
    },
}
# Old API versions of the same kinds are accepted with the same fields.
API[("networking.istio.io/v1beta1", "DestinationRule")] = API[("networking.istio.io/v1", "DestinationRule")]
API[("networking.istio.io/v1beta1", "ServiceEntry")] = API[("networking.istio.io/v1", "ServiceEntry")]


def check(value, spec, path, problems):
    if spec is ANY:
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object")
            return
        for key, sub in value.items():
            if key not in spec:
                problems.append(f"{path}.{key}: not a field of this API")
            else:
                check(sub, spec[key], f"{path}.{key}", problems)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, spec[0], f"{path}[{i}]", problems)
    elif isinstance(spec, set):
        if value not in spec:
            problems.append(f"{path}: {value!r} is not one of {sorted(spec)}")
    elif isinstance(spec, re.Pattern):
        if not (isinstance(value, str) and spec.match(value)):
            problems.append(f"{path}: {value!r} does not match {spec.pattern}")
    elif spec is int:
        if not (isinstance(value, int) and not isinstance(value, bool)):
            problems.append(f"{path}: expected an integer")
    elif not isinstance(value, spec):
        problems.append(f"{path}: expected {spec.__name__}")


def manifests(name):
    return [d for d in yaml.safe_load_all((ISTIO / name).read_text()) if d]


def bundle():
    kustomization = yaml.safe_load((ISTIO / "kustomization.yaml").read_text())
    return kustomization, [d for r in kustomization["resources"] for d in manifests(r)]


@pytest.mark.parametrize("name", sorted(p.name for p in ISTIO.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_every_manifest_uses_only_fields_of_its_api(name):
    problems = []
    for doc in manifests(name):
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in API, f"{name}: {key} is not an API this project knows"
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec", "data"}, sorted(doc)
        assert doc["metadata"].get("name") and set(doc["metadata"]) <= {"name", "namespace", "labels", "annotations"}
        if key == ("v1", "ConfigMap"):
            assert set(doc) == {"apiVersion", "kind", "metadata", "data"}
            continue
        check(doc["spec"], API[key], f"{name}:{doc['kind']}/{doc['metadata']['name']}.spec", problems)
    assert problems == []


def test_the_checker_catches_what_istio_would_refuse():
    problems = []
    wasm = API[("extensions.istio.io/v1alpha1", "WasmPlugin")]
    check({"phase": "EARLY", "priorty": 1, "failStrategy": "FAIL_CLOSE", "sha256": "abc",
           "vmConfig": {"env": [{"name": "X", "valueFrom": "SECRET"}]}}, wasm, "spec", problems)
    assert sorted(problems) == ["spec.phase: 'EARLY' is not one of ['AUTHN', 'AUTHZ', 'STATS', 'UNSPECIFIED_PHASE']",
                                "spec.priorty: not a field of this API",
                                "spec.sha256: 'abc' does not match ^[0-9a-f]{64}$",
                                "spec.vmConfig.env[0].valueFrom: 'SECRET' is not one of ['HOST', 'INLINE']"]


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
CHAIN = ["sluice-budget-enforcer", "sluice-pii-scrubber", "sluice-semantic-cache", "sluice-model-rewriter",
         "sluice-token-counter"]
FAIL = {"sluice-budget-enforcer": "FAIL_CLOSE", "sluice-pii-scrubber": "FAIL_CLOSE",
        "sluice-semantic-cache": "FAIL_OPEN", "sluice-model-rewriter": "FAIL_CLOSE", "sluice-token-counter": "FAIL_OPEN"}
SCHEMA_OF = {"sluice-budget-enforcer": "budget-enforcer", "sluice-pii-scrubber": "pii-scrubber",
             "sluice-semantic-cache": "semantic-cache", "sluice-model-rewriter": "model-rewriter",
             "sluice-token-counter": "token-counter"}


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
    current = {"sluice-" + r["module"].replace("_", "-"): r["image"].split(":")[1] for r in built}
    stale = {name: pin for name, pin in pins.items() if current[name] != pin}
    assert not stale, f"istio/pins.yaml is stale for {sorted(stale)}: run `make pin`"


def remote_codes(value):
    """Every `vm_config.code.remote` below a value."""
    if isinstance(value, dict):
        if isinstance(value.get("remote"), dict) and "http_uri" in value["remote"]:
            yield value["remote"]
        for v in value.values():
            yield from remote_codes(v)
    elif isinstance(value, list):
        for v in value:
            yield from remote_codes(v)


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
    assert called == {"redis-bridge.sluice.internal", "embedder.sluice.internal"}


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

DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Envoy Gateway's WasmCodeSource: the checksum sits inside `http` or `image`, never beside them.
EG_WASM = {"name": str, "rootID": str, "failOpen": bool, "config": ANY,
           "code": {"type": enum("HTTP", "Image", "ConfigMap"), "http": {"url": str, "sha256": DIGEST},
                    "image": {"url": str, "pullSecretRef": ANY, "sha256": DIGEST},
                    "configMap": ANY, "pullPolicy": enum("IfNotPresent", "Always")}}
EG_POLICY = {"targetRef": TARGET_REF, "targetRefs": [TARGET_REF], "wasm": [EG_WASM], "extProc": ANY}


EG_CLIENT_POLICY = {"targetRef": TARGET_REF, "targetRefs": [TARGET_REF],
                    "path": {"escapedSlashesAction": enum("KeepUnchanged", "RejectRequest", "UnescapeAndRedirect",
                                                          "UnescapeAndForward"),
                             "disableMergeSlashes": bool},
                    "headers": {"earlyRequestHeaders": {"set": ANY, "add": ANY, "remove": [str]},
                                "withUnderscoresAction": ANY, "preserveXRequestID": bool, "xForwardedClientCert": ANY}}


def eg_documents(kind):
    return [d for d in yaml.safe_load_all((ROOT / "envoy-config/envoy-gateway-extension-policy.yaml").read_text())
            if d and d["kind"] == kind]


def test_envoy_gateway_client_policy_uses_only_fields_of_its_api():
    [policy] = eg_documents("ClientTrafficPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    problems = []
    check(policy["spec"], EG_CLIENT_POLICY, "spec", problems)
    assert problems == []


def test_envoy_gateway_policy_runs_the_chain_pinned_and_configured():
    [policy] = eg_documents("EnvoyExtensionPolicy")
    assert (policy["apiVersion"], policy["kind"]) == ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy")
    problems = []
    check(policy["spec"], EG_POLICY, "spec", problems)
    assert problems == []
    wasm = policy["spec"]["wasm"]
    assert [w["name"].replace("sluice.", "sluice-").replace("_", "-") for w in wasm] == CHAIN
    pins = {d["metadata"]["name"]: d["spec"]["sha256"] for d in manifests("pins.yaml")}
    for entry in wasm:
        name = entry["name"].replace("sluice.", "sluice-").replace("_", "-")
        assert entry["failOpen"] == (FAIL[name] == "FAIL_OPEN"), name
        assert entry["code"]["image"]["sha256"] == pins[name], f"{name}: run `make pin`"
        assert entry["code"]["image"]["url"].split("/")[-1].startswith(name.removeprefix("sluice-") + ":")
        schema = json.loads((ROOT / "plugins" / SCHEMA_OF[name] / "config.schema.json").read_text())
        jsonschema.validate(entry["config"], schema)
