//! A proxy-wasm HTTP filter that does nothing: `make bench` runs it in the token counter's place
//! to show what any wasm filter costs in Envoy, apart from what a module does.

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Nothing) });
}}

struct Nothing;

impl Context for Nothing {}
impl HttpContext for Nothing {}
