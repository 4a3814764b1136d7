//! A proxy-wasm HTTP filter that does nothing: `make bench` runs it in the token counter's place
//! to show what any wasm filter costs in Envoy, apart from what a module does.
//!
//! Configured with `"<call> <count>"` (`python -m harness.host_cost`), it makes one kind of host
//! call `count` times per request instead, so the price of each call is measured the same way:
//! most of what a Sluice module costs is on Envoy's side of these calls, not in its own code.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(Probe::default())) });
}}

/// Which host call to repeat, how often, and the metric it may use.
#[derive(Clone, Default)]
struct Probe {
    call: String,
    count: usize,
    metric: u32,
}

struct Root(Probe);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text =
            self.get_plugin_configuration().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let mut words = text.split_whitespace();
        let call = words.next().unwrap_or_default().to_string();
        let count = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let kind = match call.as_str() {
            "record_histogram" => MetricType::Histogram,
            "set_gauge" => MetricType::Gauge,
            _ => MetricType::Counter,
        };
        let metric = hostcalls::define_metric(kind, "sluice_probe").unwrap_or(0);
        self.0 = Probe { call, count, metric };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter(self.0.clone())))
    }
}

struct Filter(Probe);

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Probe { call, count, metric } = &self.0;
        if call == "get_property" {
            let _ = hostcalls::set_property(vec!["sluice.probe"], Some(b"value"));
        }
        for i in 0..*count {
            let _ = match call.as_str() {
                "get_header" => hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path").map(drop),
                "get_headers" => hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map(drop),
                "set_header" => {
                    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, &format!("x-p{i}"), Some(b"v"))
                }
                "get_property" => hostcalls::get_property(vec!["sluice.probe"]).map(drop),
                "get_missing_property" => hostcalls::get_property(vec!["sluice.none"]).map(drop),
                "set_property" => hostcalls::set_property(vec![&format!("sluice.p{i}")], Some(b"value")),
                "envoy_property" => hostcalls::get_property(vec!["request", "id"]).map(drop),
                "increment_counter" => hostcalls::increment_metric(*metric, 1),
                "record_histogram" | "set_gauge" => hostcalls::record_metric(*metric, 5),
                "define_metric" => hostcalls::define_metric(MetricType::Counter, "sluice_probe;team=a").map(drop),
                "current_time" => hostcalls::get_current_time().map(drop),
                "log_filtered" => hostcalls::log(proxy_wasm::types::LogLevel::Trace, "probe"),
                _ => Ok(()),
            };
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.0.call == "get_body" && end_of_stream {
            for _ in 0..self.0.count {
                let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
            }
        }
        Action::Continue
    }
}
