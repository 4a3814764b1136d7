# Sluice: `make run` starts the gateway, `make test` runs every test, `make bench` measures.
# A fresh machine needs nothing but this file: missing tools are installed on first use and
# cached in $(CACHE) between runs (the venv, wasm-bindgen's test runner).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

CACHE ?= $(HOME)/.cache/sluice
REQUIREMENTS := tests/requirements.txt tests/requirements-nodeps.txt
VENV := $(CACHE)/venv-$(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-12)
PY := $(VENV)/bin/python
TOOLS := $(CACHE)/tools
WASM_DIR := target/wasm32-wasip1/release
WASM_BINDGEN_VERSION := $(shell sed -n '/^name = "wasm-bindgen"$$/{n;s/version = "\(.*\)"/\1/p}' Cargo.lock)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(TOOLS)/bin:$(PATH)

.PHONY: build deps rust-targets system-packages venv wasm-bindgen embedder lint unit-test wasm-test \
        integration-test test test-unit test-integration test-quality test-deploy run bench bench-peers soak oci pin push \
        docs clean

## Build every module to $(WASM_DIR)/*.wasm, and the bundle of all of them (sluice_bundle.wasm).
## The bundle links the modules without their own entry points (feature `standalone` off): its
## own cargo invocation and target directory, so neither build undoes the other's.
build: rust-targets system-packages
	cargo build --release --target wasm32-wasip1 --workspace --exclude sluice-bundle
	cargo build --profile bundle --target wasm32-wasip1 -p sluice-bundle --target-dir target/bundle
	cp -p target/bundle/wasm32-wasip1/bundle/sluice_bundle.wasm $(WASM_DIR)/

deps: rust-targets system-packages venv wasm-bindgen embedder

# The reference embedding service (tests/embedder, all-MiniLM-L6-v2 in Rust) for the tests,
# `make run` and the benchmarks: a release build for this machine's CPU, kept in $(CACHE) (about
# two minutes the first time, a no-op after).
EMBEDDER_CARGO = RUSTFLAGS="-C target-cpu=native" cargo --quiet
EMBEDDER_FLAGS = --release --manifest-path tests/embedder/Cargo.toml --target-dir $(CACHE)/embedder
EMBEDDER := $(CACHE)/embedder/release/sluice-embedder
export SLUICE_EMBEDDER := $(EMBEDDER)
embedder:
	$(EMBEDDER_CARGO) build $(EMBEDDER_FLAGS)

rust-targets:
	@installed="$$(rustup target list --installed)"; \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done

system-packages:
	@missing=""; \
	for cmd in redis-server:redis-server webdis:webdis wrk:wrk node:nodejs curl:curl pgrep:procps taskset:util-linux skopeo:skopeo promtool:prometheus docker-registry:docker-registry; do \
	  command -v "$${cmd%%:*}" >/dev/null || missing="$$missing $${cmd##*:}"; \
	done; \
	[ -f /usr/share/wordnet/data.noun ] || missing="$$missing wordnet-base"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed
$(VENV)/.installed: $(REQUIREMENTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r tests/requirements-nodeps.txt
	touch $@
	@# Venvs of earlier requirements are not used again.
	find $(CACHE) -maxdepth 1 -name 'venv-*' ! -path '$(VENV)' -exec rm -rf {} +

# wasm-bindgen-test-runner must match the wasm-bindgen version in Cargo.lock.
wasm-bindgen:
	@if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)$$"; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(TOOLS) (a few minutes, once)"; \
	  cargo install -q --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi

lint: rust-targets system-packages
	cargo fmt --all --check
	cargo fmt --manifest-path tests/embedder/Cargo.toml --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --target wasm32-wasip1 -- -D warnings
	cargo clippy -p sluice-shared --features census --target wasm32-wasip1 -- -D warnings
	$(EMBEDDER_CARGO) clippy $(EMBEDDER_FLAGS) --all-targets -- -D warnings

unit-test: system-packages
	cargo test --workspace --exclude sluice-bundle
	$(EMBEDDER_CARGO) test $(EMBEDDER_FLAGS)

# The shared crate's tests, compiled to wasm and run under Node.
wasm-test: rust-targets wasm-bindgen
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  cargo test -p sluice-shared --target wasm32-unknown-unknown

RUN_PYTEST = SLUICE_WASM_DIR=$(CURDIR)/$(WASM_DIR) $(PY) -m pytest -q -p no:cacheprovider
PYTEST = cd tests && $(RUN_PYTEST)

# The whole suite, then every test in real Envoy again with the bundle: all modules in one
# sluice_bundle.wasm sharing one VM per worker (harness/stack.py, SLUICE_BUNDLE).
integration-test: build venv system-packages embedder
	$(PYTEST) integration quality
	cd tests && SLUICE_BUNDLE=1 $(RUN_PYTEST) $(addprefix integration/,$(ALL_INTEGRATION)) $(addprefix quality/,$(QUALITY_TESTS))

## Everything CI runs.
test: deps build lint unit-test wasm-test integration-test

## Smaller tiers (`make test` runs them all). Unit tests, native and as wasm under Node:
test-unit: rust-targets wasm-bindgen embedder unit-test wasm-test

# The integration tests of one module: `make test-integration MODULE=budget-enforcer`; without
# MODULE, every test in real Envoy except the deploy tier.
TESTS_budget-enforcer := test_budget_enforcer.py
TESTS_pii-scrubber := test_pii_scrubber.py
TESTS_guard := test_guard.py
TESTS_semantic-cache := test_semantic_cache.py test_embedder.py
TESTS_model-rewriter := test_model_rewriter.py test_fallback.py test_pools.py test_breakers.py test_intents.py
TESTS_provider-adapter := test_fallback.py test_translation.py
TESTS_token-counter := test_token_counter.py
TESTS_gate := test_gate.py
TESTS_run := test_gateway.py
DEPLOY_TESTS := test_configs.py test_istio_bundle.py test_oci.py test_monitoring.py
ALL_INTEGRATION := $(sort $(foreach m,budget-enforcer pii-scrubber guard semantic-cache model-rewriter provider-adapter token-counter gate run,$(TESTS_$(m))))
test-integration: build venv system-packages embedder
	@[ -z "$(MODULE)" ] || [ -n "$(TESTS_$(MODULE))" ] || { echo "unknown MODULE=$(MODULE)"; exit 2; }
	$(PYTEST) $(addprefix integration/,$(if $(MODULE),$(TESTS_$(MODULE)),$(ALL_INTEGRATION)))

## Measurements on labelled data, end to end in real Envoy (tests/quality): the semantic cache's
## hit quality on the labelled pairs, with and without its guard and verifier; the guard's
## semantic prompt-injection check on the labelled prompts.
QUALITY_TESTS := test_cache_quality.py test_injection_quality.py test_routing_quality.py
test-quality: build venv system-packages embedder
	$(PYTEST) $(addprefix quality/,$(QUALITY_TESTS))

## Bundles, images, dashboards and shipped configs: the Istio and Envoy Gateway manifests, OCI
## layouts, alert rules and dashboard queries, `envoy --mode validate` of every bootstrap.
test-deploy: build venv system-packages
	$(PYTEST) $(addprefix integration/,$(DEPLOY_TESTS))

## The gateway with every module on 127.0.0.1:10000 (admin 9901), Redis, webdis and the mock
## provider (or the real APIs when OPENAI_API_KEY / ANTHROPIC_API_KEY are set). Ctrl-C stops it.
run: build venv system-packages embedder
	cd tests && SLUICE_WASM_DIR=$(CURDIR)/$(WASM_DIR) $(PY) -m harness.gateway

## wrk on loopback: plain Envoy against Envoy with the modules, in one run.
## `make bench BENCH_ARGS="--variants pii-scrubber"` measures a subset (see --help).
bench: build venv system-packages embedder
	cd tests && SLUICE_WASM_DIR=$(CURDIR)/$(WASM_DIR) $(PY) -m harness.bench --out $(CURDIR)/bench/results $(BENCH_ARGS)

## The bundle under steady load for ten minutes: RSS, Envoy's heap and budget checks every 30 s;
## fails if memory grew or an answer failed (bench/results/soak.json). Not part of `make test`.
soak: build venv system-packages
	cd tests && SLUICE_WASM_DIR=$(CURDIR)/$(WASM_DIR) $(PY) -m harness.soak --out $(CURDIR)/bench/results $(SOAK_ARGS)

## Plain Envoy, Envoy with the whole Sluice chain (single modules, and the bundle), the LiteLLM
## proxy and Portkey's gateway on the same workload, in one run (LiteLLM in its own cached venv,
## Portkey in its own npm prefix). Writes bench/results/peers.json and the results page.
LITELLM_VERSION := 1.100.5
LITELLM_VENV := $(CACHE)/litellm-$(LITELLM_VERSION)
PORTKEY_VERSION := 1.15.2
PORTKEY_DIR := $(CACHE)/portkey-$(PORTKEY_VERSION)
bench-peers: build venv system-packages embedder $(LITELLM_VENV)/.installed $(PORTKEY_DIR)/.installed
	cd tests && SLUICE_WASM_DIR=$(CURDIR)/$(WASM_DIR) $(PY) -m harness.bench_peers --out $(CURDIR)/bench/results \
	  --litellm $(LITELLM_VENV)/bin/litellm --portkey $(PORTKEY_DIR) $(BENCH_ARGS)
$(PORTKEY_DIR)/.installed:
	npm install --prefix $(PORTKEY_DIR) --no-audit --no-fund --silent "@portkey-ai/gateway@$(PORTKEY_VERSION)"
	touch $@
$(LITELLM_VENV)/.installed:
	python3 -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q --disable-pip-version-check "litellm[proxy]==$(LITELLM_VERSION)"
	touch $@

## OCI image layouts of every module in target/oci (no Docker): an image whose single layer holds
## plugin.wasm, and the Wasm OCI artifact variant; prints digests and each module's sha256.
oci: build venv
	cd tests && $(PY) -m harness.oci --wasm-dir $(CURDIR)/$(WASM_DIR) --out $(CURDIR)/target/oci

## Pins every WasmPlugin of the istio/ bundle to the digest of the image built from this tree.
pin: build venv
	cd tests && $(PY) -m harness.oci --wasm-dir $(CURDIR)/$(WASM_DIR) --out $(CURDIR)/target/oci --pins $(CURDIR)/istio/pins.yaml

## The generated docs: docs/configuration.md from the modules' JSON Schemas, and
## docs/benchmark-results.md from bench/results (the benchmarks also rewrite it).
docs: venv
	cd tests && $(PY) -m harness.config_reference --write && $(PY) -m harness.bench_report --write

## `make push REGISTRY=ghcr.io/you/sluice`: pushes the layouts with skopeo (when installed) as
## <module>:<version> and <module>:<version>-artifact. SKOPEO_FLAGS is passed to `skopeo copy`
## (credentials: --dest-creds or `skopeo login`; a plain-HTTP registry: --dest-tls-verify=false).
REGISTRY ?=
SKOPEO_FLAGS ?=
push: oci
	@[ -n "$(REGISTRY)" ] || { echo "set REGISTRY, e.g. make push REGISTRY=ghcr.io/you/sluice"; exit 2; }
	@command -v skopeo >/dev/null || { echo "skopeo is not installed (apt-get install skopeo)"; exit 2; }
	@version=$$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml); \
	for layout in target/oci/*/; do \
	  name=$$(basename $$layout); module=$${name%-artifact}; module=$${module//_/-}; \
	  suffix=$$([ "$$name" != "$${name%-artifact}" ] && echo -artifact || true); \
	  echo "pushing $(REGISTRY)/$$module:$$version$$suffix"; \
	  skopeo copy --preserve-digests $(SKOPEO_FLAGS) "oci:$$layout:$$version" "docker://$(REGISTRY)/$$module:$$version$$suffix"; \
	done

clean:
	cargo clean
