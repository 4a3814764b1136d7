"""The upstream API schemas the shipped manifests are checked against (tests/data/crds/), and the
strict check itself: unknown fields are errors, as `kubectl apply --validate=strict` makes them.

The schemas are the `openAPIV3Schema` of each CustomResourceDefinition we use, taken unchanged
from the projects that define them (SOURCES: repository, commit, file). `--update DIR` rewrites
them from local clones of those repositories at the pinned commits:

    python -m harness.crds --update /path/with/<owner>+<repo>/repo checkouts
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from .stack import ROOT

DIRECTORY = ROOT / "tests" / "data" / "crds"

# (repository, commit, file, {(apiVersion, kind) kept from it})
SOURCES = [
    ("istio/istio", "86c9f01fd735fb01d8192f5bcaf0d424afb7f14c", "manifests/charts/base/files/crd-all.gen.yaml",
     {("extensions.istio.io/v1alpha1", "WasmPlugin"), ("networking.istio.io/v1alpha3", "EnvoyFilter"),
      ("networking.istio.io/v1", "ServiceEntry"), ("networking.istio.io/v1", "DestinationRule")}),
    # The experimental channel: the HTTPRoute's `retry` is only there (see its comment).
    ("kubernetes-sigs/gateway-api", "4564255ac2c35d582249b3cdf261bdf51c8bca32",
     "config/crd/experimental/gateway.networking.k8s.io_httproutes.yaml",
     {("gateway.networking.k8s.io/v1", "HTTPRoute")}),
    ("kubernetes-sigs/gateway-api", "4564255ac2c35d582249b3cdf261bdf51c8bca32",
     "config/crd/experimental/gateway.networking.k8s.io_gateways.yaml",
     {("gateway.networking.k8s.io/v1", "Gateway")}),
    ("envoyproxy/gateway", "d32f28294245e454d20f81d323d626a90e660c1e",
     "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_envoyextensionpolicies.yaml",
     {("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy")}),
    ("envoyproxy/gateway", "d32f28294245e454d20f81d323d626a90e660c1e",
     "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_clienttrafficpolicies.yaml",
     {("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy")}),
]

METADATA = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                           "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}


def file_name(api_version, kind) -> str:
    return f"{api_version.replace('/', '_')}_{kind}.json"


def extract(text: str, wanted) -> dict:
    """{(apiVersion, kind): openAPIV3Schema} of the wanted served versions in a CRD file."""
    found = {}
    for crd in yaml.safe_load_all(text):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            key = (f"{group}/{version['name']}", kind)
            if key in wanted and version.get("served", True):
                found[key] = version["schema"]["openAPIV3Schema"]
    return found


def update(mirrors: Path):
    for repo, commit, path, wanted in SOURCES:
        checkout = mirrors / repo.replace("/", "+") / "repo"
        text = subprocess.run(["git", "-C", str(checkout), "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        found = extract(text, wanted)
        missing = wanted - set(found)
        if missing:
            raise SystemExit(f"{repo}@{commit}:{path} has no {sorted(missing)}")
        for (api_version, kind), schema in found.items():
            document = {"source": f"https://github.com/{repo}/blob/{commit}/{path}", "apiVersion": api_version,
                        "kind": kind, "openAPIV3Schema": schema}
            (DIRECTORY / file_name(api_version, kind)).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def strict(schema):
    """The schema with every object closed to unknown fields, except where the API itself keeps
    them (`x-kubernetes-preserve-unknown-fields`: plugin configs, Envoy config in patches)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf") else v
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object and not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def known() -> set:
    return {(d["apiVersion"], d["kind"]) for d in map(lambda p: json.loads(p.read_text()), DIRECTORY.glob("*.json"))}


def problems(document: dict) -> list:
    """Where a manifest departs from its API's schema, strictly; [] when it conforms."""
    key = (document.get("apiVersion"), document.get("kind"))
    path = DIRECTORY / file_name(*key) if all(key) else None
    if not path or not path.exists():
        return [f"{key}: not an API whose schema is in tests/data/crds"]
    schema = strict(json.loads(path.read_text())["openAPIV3Schema"])
    schema.setdefault("properties", {}).update(
        {"apiVersion": {"const": key[0]}, "kind": {"const": key[1]}, "metadata": METADATA})
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, required=True, help="directory of <owner>+<repo>/repo clones")
    update(parser.parse_args().update)
    return 0


if __name__ == "__main__":
    sys.exit(main())
