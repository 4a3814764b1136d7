"""`make oci`: each module's OCI image layout and Wasm artifact, read back: the layout files, the
manifest, media types, digests and sizes, and that the layer holds exactly the built module.
skopeo (an independent OCI implementation) must read and copy them with their digests intact."""

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import oci
from harness.stack import Stack


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    wasm_dir = Stack(workdir=tmp_path_factory.mktemp("w")).wasm_dir
    out = tmp_path_factory.mktemp("oci")
    return wasm_dir, out, oci.build_all(wasm_dir, out)


def blob(layout: Path, descriptor: dict) -> bytes:
    algorithm, hex_digest = descriptor["digest"].split(":")
    data = (layout / "blobs" / algorithm / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest and len(data) == descriptor["size"], descriptor
    return data


def manifest_of(layout: Path, tag: str) -> tuple:
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == oci.INDEX
    [entry] = index["manifests"]
    assert entry["mediaType"] == oci.MANIFEST and entry["annotations"]["org.opencontainers.image.ref.name"] == tag
    raw = blob(layout, entry)
    return entry["digest"], json.loads(raw), raw


def test_every_module_has_an_image_whose_single_layer_holds_plugin_wasm(built):
    wasm_dir, out, rows = built
    assert [r["module"] for r in rows] == oci.MODULES
    for row in rows:
        module = (wasm_dir / f"sluice_{row['module']}.wasm").read_bytes()
        assert row["module_sha256"] == hashlib.sha256(module).hexdigest()
        digest, manifest, _ = manifest_of(out / row["module"], row["tag"])
        assert digest == row["image"]
        assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.MANIFEST
        assert manifest["config"]["mediaType"] == oci.IMAGE_CONFIG
        [layer] = manifest["layers"]
        assert layer["mediaType"] == oci.IMAGE_LAYER
        tar_bytes = gzip.decompress(blob(out / row["module"], layer))
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            [member] = tar.getmembers()
            assert member.name == "plugin.wasm" and member.isfile()
            assert tar.extractfile(member).read() == module
        config = json.loads(blob(out / row["module"], manifest["config"]))
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]
        assert (config["architecture"], config["os"]) == ("wasm", "wasip1")


def test_every_module_has_a_wasm_artifact_that_is_the_module(built):
    wasm_dir, out, rows = built
    for row in rows:
        module = (wasm_dir / f"sluice_{row['module']}.wasm").read_bytes()
        layout = out / f"{row['module']}-artifact"
        digest, manifest, _ = manifest_of(layout, row["tag"])
        assert digest == row["artifact"] and manifest["artifactType"] == oci.WASM_CONFIG
        assert manifest["config"]["mediaType"] == oci.WASM_CONFIG
        [layer] = manifest["layers"]
        assert layer["mediaType"] == oci.WASM_LAYER
        assert layer["annotations"]["org.opencontainers.image.title"] == "plugin.wasm"
        assert blob(layout, layer) == module


def test_builds_are_reproducible(built, tmp_path):
    wasm_dir, _, rows = built
    again = oci.build_all(wasm_dir, tmp_path)
    assert [(r["image"], r["artifact"]) for r in again] == [(r["image"], r["artifact"]) for r in rows]


def test_skopeo_reads_and_copies_the_layouts(built, tmp_path):
    _, out, rows = built
    row = next(r for r in rows if r["module"] == "semantic_cache")
    for name in ["semantic_cache", "semantic_cache-artifact"]:
        source = f"oci:{out / name}:{row['tag']}"
        raw = subprocess.run(["skopeo", "inspect", "--raw", source], capture_output=True, check=True).stdout
        assert raw == manifest_of(out / name, row["tag"])[2]
        copy = tmp_path / name
        subprocess.run(["skopeo", "copy", "--preserve-digests", source, f"oci:{copy}:{row['tag']}"],
                       capture_output=True, check=True)
        # skopeo writes its own index.json; the manifest it points to must be ours, byte for byte.
        [entry] = json.loads((copy / "index.json").read_text())["manifests"]
        assert entry["digest"] == manifest_of(out / name, row["tag"])[0]
        assert blob(copy, entry) == raw
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{out / 'semantic_cache'}:{row['tag']}"],
                                          capture_output=True, check=True).stdout)
    assert inspected["Digest"] == row["image"] and inspected["Architecture"] == "wasm"


def test_make_push_puts_every_layout_in_a_registry_with_its_digest(tmp_path):
    """`make push` against a local registry (Docker's distribution, plain HTTP on loopback)."""
    from harness.procs import Proc, free_port, http_ok, wait_until
    port = free_port()
    (tmp_path / "registry.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n")
    registry = Proc("registry", ["docker-registry", "serve", str(tmp_path / "registry.yml")], tmp_path / "registry.log")
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/v2/"), "registry", 20, registry)
        out = subprocess.run(["make", "-s", "push", f"REGISTRY=127.0.0.1:{port}/sluice",
                              "SKOPEO_FLAGS=--dest-tls-verify=false"], cwd=oci.ROOT, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        tag = oci.version()
        for module in oci.MODULES:
            name = module.replace("_", "-")
            for suffix, layout in [("", module), ("-artifact", f"{module}-artifact")]:
                ref = f"docker://127.0.0.1:{port}/sluice/{name}:{tag}{suffix}"
                raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", ref], capture_output=True,
                                     check=True).stdout
                index = json.loads((oci.ROOT / "target/oci" / layout / "index.json").read_text())
                assert "sha256:" + hashlib.sha256(raw).hexdigest() == index["manifests"][0]["digest"], ref
    finally:
        registry.stop()
