//! # Sluice bundle
//!
//! Every module in one `.wasm`. Envoy keeps one VM per distinct (vm_id, VM configuration, code)
//! on each worker (plus two on the main thread): filters that load this file with the same
//! `vm_config` share those VMs instead of one set per module, and the code, the tokenizer tables
//! and the V8 overhead exist once per worker. Each filter names its module by root id
//! (`root_id` in Envoy, `pluginName` in an Istio WasmPlugin) and keeps its own root context and
//! configuration.
//!
//! The price: a trap in any module ends the VM for all of them on that worker, so the chain
//! shares one failure policy (`FAIL_RELOAD`: the request that hit it fails, the VM is replaced).
//! Modules never panic by design (the workspace lints); operators who want per-module
//! isolation, or another proxy-wasm host, attach the single-module builds instead.

use proxy_wasm::traits::{Context, RootContext};
use sluice_shared::host::Properties;
use sluice_shared::proxy::Host;

type Start = fn(u32) -> Box<dyn RootContext>;

/// Root id to module, in chain order.
const MODULES: [(&str, Start); 7] = [
    ("sluice.budget_enforcer", sluice_budget_enforcer::root),
    ("sluice.pii_scrubber", sluice_pii_scrubber::root),
    // Twice in the chain (prompts before the cache, answers after it), by one root id.
    ("sluice.guard", sluice_guard::root),
    ("sluice.semantic_cache", sluice_semantic_cache::root),
    ("sluice.model_rewriter", sluice_model_rewriter::root),
    ("sluice.provider_adapter", sluice_provider_adapter::root),
    ("sluice.token_counter", sluice_token_counter::root),
];

proxy_wasm::main! {{
    sluice_shared::proxy::init_logging();
    proxy_wasm::set_root_context(root);
}}

fn root(context_id: u32) -> Box<dyn RootContext> {
    let id = Host.get_property(&["plugin_root_id"]).map(|id| String::from_utf8_lossy(&id).into_owned());
    match MODULES.iter().find(|(name, _)| Some(*name) == id.as_deref()) {
        Some((_, start)) => start(context_id),
        None => Box::new(Unknown { id: id.unwrap_or_default() }),
    }
}

/// A filter whose root id names no module: its configuration is refused, so Envoy reports it.
struct Unknown {
    id: String,
}

impl Context for Unknown {}

impl RootContext for Unknown {
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        let known: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
        log::error!(
            "sluice bundle: root id `{}` names no module (set root_id to one of: {})",
            self.id,
            known.join(", ")
        );
        false
    }
}
