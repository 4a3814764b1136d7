"""`make oci`: one OCI image layout per module, without Docker, in the formats Istio's WasmPlugin
fetcher accepts.

- **Image** (`target/oci/<module>`): an OCI image whose single tar+gzip layer holds `plugin.wasm`
  (Istio's "compat" variant; any OCI registry and `skopeo` take it).
- **Wasm artifact** (`target/oci/<module>-artifact`): the Wasm OCI artifact variant, config
  `application/vnd.module.wasm.config.v1+json` and one `application/vnd.module.wasm.content.layer.v1+wasm`
  layer that is the module itself.

Builds are reproducible: the same module gives the same digests (fixed timestamps, owners and
gzip header). Each layout has one manifest, tagged with the workspace version.

Run: python -m harness.oci [--out DIR] [--wasm-dir DIR]
"""

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
# The modules an operator deploys, and the bundle of all of them (the wasm floor is a benchmark
# fixture).
MODULES = ["token_counter", "budget_enforcer", "pii_scrubber", "guard", "semantic_cache", "model_rewriter", "provider_adapter",
           "bundle"]

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"


def version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', text, re.S).group(1)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def plugin_tar(module: bytes) -> bytes:
    """An uncompressed tar holding `plugin.wasm` only, with fixed metadata."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime, info.uid, info.gid = len(module), 0o444, 0, 0, 0
        tar.addfile(info, io.BytesIO(module))
    return out.getvalue()


def write_layout(out: Path, blobs: list, manifest: dict, tag: str) -> str:
    """Writes an OCI image layout with one manifest; returns the manifest's digest."""
    (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    manifest_bytes = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    for blob in [*blobs, manifest_bytes]:
        (out / "blobs" / "sha256" / digest(blob).split(":")[1]).write_bytes(blob)
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [{
        "mediaType": MANIFEST, "digest": digest(manifest_bytes), "size": len(manifest_bytes),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (out / "index.json").write_text(json.dumps(index, indent=2))
    return digest(manifest_bytes)


def descriptor(media_type: str, blob: bytes, **annotations) -> dict:
    found = {"mediaType": media_type, "digest": digest(blob), "size": len(blob)}
    if annotations:
        found["annotations"] = annotations
    return found


def annotations(name: str, tag: str) -> dict:
    return {"org.opencontainers.image.title": f"sluice-{name.replace('_', '-')}",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.source": "https://github.com/example/sluice",
            "org.opencontainers.image.licenses": "Apache-2.0"}


def build_image(name: str, module: bytes, out: Path, tag: str) -> str:
    tar = plugin_tar(module)
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    config = json.dumps({"architecture": "wasm", "os": "wasip1",
                         "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
                         "config": {}}, separators=(",", ":"), sort_keys=True).encode()
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": descriptor(IMAGE_CONFIG, config),
                "layers": [descriptor(IMAGE_LAYER, layer)], "annotations": annotations(name, tag)}
    return write_layout(out, [config, layer], manifest, tag)


def build_artifact(name: str, module: bytes, out: Path, tag: str) -> str:
    config = b"{}"
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": WASM_CONFIG,
                "config": descriptor(WASM_CONFIG, config),
                "layers": [descriptor(WASM_LAYER, module, **{"org.opencontainers.image.title": "plugin.wasm"})],
                "annotations": annotations(name, tag)}
    return write_layout(out, [config, module], manifest, tag)


def build_all(wasm_dir: Path, out_dir: Path):
    """Builds both layouts of every module; returns rows of what was built."""
    tag = version()
    rows = []
    for name in MODULES:
        module = (wasm_dir / f"sluice_{name}.wasm").read_bytes()
        image = build_image(name, module, out_dir / name, tag)
        artifact = build_artifact(name, module, out_dir / f"{name}-artifact", tag)
        rows.append({"module": name, "tag": tag, "image": image, "artifact": artifact,
                     "module_sha256": hashlib.sha256(module).hexdigest()})
    return rows


# Modules deployed as WasmPlugins of the istio/ bundle (the provider adapter is an upstream filter
# in an EnvoyFilter, pinned by its module sha256 there; the bundle of all modules is an image for
# Envoy and Envoy Gateway, not yet a WasmPlugin of the bundle).
WASM_PLUGINS = [m for m in MODULES if m not in ("provider_adapter", "bundle")]
# A module deployed as more than one WasmPlugin (the guard: prompts before the cache, answers
# after it), each pinned to the same image.
PLUGIN_NAMES = {"guard": ["sluice-guard", "sluice-guard-answers"]}


def pins(rows) -> str:
    """A kustomize patch pinning each WasmPlugin of istio/ to its image digest (`spec.sha256`)."""
    docs = []
    for row in rows:
        if row["module"] not in WASM_PLUGINS:
            continue
        for name in PLUGIN_NAMES.get(row["module"], ["sluice-" + row["module"].replace("_", "-")]):
            docs.append(f"""apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: {name}
  namespace: istio-system
spec:
  # {row['module']} {row['tag']}: image {row['image']}
  sha256: {row['image'].split(':')[1]}
""")
    head = ("# Written by `make pin` from `make oci`: each WasmPlugin pinned to the digest of the image built\n"
            "# from this tree (Istio checks it after the pull). Builds are reproducible: the same sources and\n"
            "# toolchain give the same digests.\n")
    return head + "---\n".join(docs)


def pin_envoy_gateway(path: Path, rows) -> None:
    """Sets each module's `image.sha256` in an Envoy Gateway EnvoyExtensionPolicy to its image
    digest (inside `image`: Envoy Gateway's API has no `code.sha256`)."""
    digests = {r["module"].replace("_", "-"): r["image"].split(":")[1] for r in rows}
    pattern = re.compile(r"(image:\n\s+url: [^\n]*/([a-z-]+):[^\n]*\n\s+sha256: )[0-9a-f]{64}")
    text = pattern.sub(lambda m: m.group(1) + digests[m.group(2)], path.read_text())
    path.write_text(text)


def pin_remote_modules(path: Path, rows) -> None:
    """Sets the `sha256` of each module an EnvoyFilter fetches over HTTP (`remote.http_uri` naming
    `sluice_<module>.wasm`) to that module's sha256."""
    digests = {r["module"]: r["module_sha256"] for r in rows}
    pattern = re.compile(r'(uri: "[^"]*/sluice_([a-z_]+)\.wasm"[^\n]*\n\s+sha256: ")[0-9a-f]{64}(")')
    path.write_text(pattern.sub(lambda m: m.group(1) + digests[m.group(2)] + m.group(3), path.read_text()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm-dir", default=str(DEFAULT_WASM_DIR))
    parser.add_argument("--out", default=str(ROOT / "target" / "oci"))
    parser.add_argument("--pins", default=None, help="also write the kustomize pins here (istio/pins.yaml)")
    args = parser.parse_args()
    rows = build_all(Path(args.wasm_dir), Path(args.out))
    for row in rows:
        print(f"{row['module']:17} {row['tag']}  image {row['image']}  artifact {row['artifact']}  "
              f"module sha256 {row['module_sha256']}")
    (Path(args.out) / "pins.yaml").write_text(pins(rows))
    if args.pins:
        Path(args.pins).write_text(pins(rows))
        pin_envoy_gateway(ROOT / "envoy-config" / "envoy-gateway-extension-policy.yaml", rows)
        pin_remote_modules(Path(args.pins).parent / "model-rewriter.yaml", rows)
        print(f"pinned in {args.pins}, {Path(args.pins).parent / 'model-rewriter.yaml'} and "
              "envoy-config/envoy-gateway-extension-policy.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
