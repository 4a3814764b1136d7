//! proxy-wasm glue: the [`crate::host`] traits and the body, header and reply helpers on top of
//! hostcalls. Hostcall errors are handled here (logged or turned into `None`), never unwrapped.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

use crate::callout::{Callout, CalloutError, CalloutResponse};
use crate::census;
use crate::errors::ApiError;
use crate::host::{Clock, MetricKind, MetricsHost, Properties, SharedData};

/// The proxy-wasm host of the current context.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

impl Properties for Host {
    fn get_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        census::count(|| format!("get_property:{}", path.join(".")));
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn set_property(&self, path: &[&str], value: &[u8]) {
        census::count(|| format!("set_property:{}", path.join(".")));
        if hostcalls::set_property(path.to_vec(), Some(value)).is_err() {
            log::warn!("could not set property {}", path.join("."));
        }
    }
}

impl MetricsHost for Host {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        census::count(|| "define_metric".into());
        hostcalls::define_metric(kind, name).ok()
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        census::count(|| "increment_metric".into());
        let _ = hostcalls::increment_metric(id, delta);
    }
    fn record_metric(&self, id: u32, value: u64) {
        census::count(|| "record_metric".into());
        let _ = hostcalls::record_metric(id, value);
    }
}

impl SharedData for Host {
    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        census::count(|| "get_shared_data".into());
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        census::count(|| "set_shared_data".into());
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

impl Clock for Host {
    fn now_ms(&self) -> u64 {
        census::count(|| "get_current_time".into());
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Sends the `log` crate's records to the host's log. Unlike the SDK's logger (whose `log`
/// unwraps the hostcall, so a refused call would trap the VM), a refused call is dropped.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        census::count(|| "log".into());
        let _ = hostcalls::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Routes `log::info!` and friends to the host (at info until the host's level is known, see
/// [`follow_host_log_level`]) and logs a panic as a critical line before the VM traps.
pub fn init_logging() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|panic| {
        let _ = hostcalls::log(LogLevel::Critical, &panic.to_string());
    }));
}

/// Filters records at the host's current log level for this plugin (read at configure time),
/// so a debug line costs nothing unless Envoy logs `wasm` at debug.
pub fn follow_host_log_level() {
    let filter = match hostcalls::get_log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) => log::LevelFilter::Error,
        Ok(LogLevel::Critical) => log::LevelFilter::Off,
    };
    log::set_max_level(filter);
}

/// This VM's wasm linear memory in bytes (every plugin in the VM shares it): what Envoy's RSS
/// holds for the module's data, per VM.
pub fn linear_memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    return 0;
}

/// Whether debug lines are logged for this plugin.
pub fn debug_enabled() -> bool {
    log::log_enabled!(log::Level::Debug)
}

/// Reads and checks the plugin's configuration; on error logs `<plugin>: invalid configuration
/// at `<path>`: ...` and returns `None` (`on_configure` then returns false).
pub fn load_config<T>(plugin: &str) -> Option<T>
where
    T: serde::de::DeserializeOwned + Default + crate::config::Validate,
{
    follow_host_log_level();
    match crate::config::parse_config(plugin_configuration().as_deref()) {
        Ok(config) => Some(config),
        Err(e) => {
            log::error!("{plugin}: {e}");
            None
        }
    }
}

/// The plugin configuration document (Envoy `configuration`, Istio `pluginConfig`).
pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten()
}

/// A request header as raw bytes (the string getters trap on non-UTF-8 values).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    census::count(|| format!("get_request_header:{name}"));
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()
}

/// A request header as text; `None` when absent or not UTF-8.
pub fn request_header_text(name: &str) -> Option<String> {
    request_header(name).and_then(|v| String::from_utf8(v).ok())
}

/// The names of every request header (lower case, as Envoy keeps them).
pub fn request_header_names() -> Vec<String> {
    census::count(|| "get_request_headers".into());
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map(|headers| headers.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

pub fn remove_request_header(name: &str) {
    census::count(|| format!("remove_request_header:{name}"));
    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
}

/// A response header as text; `None` when absent or not UTF-8.
pub fn response_header_text(name: &str) -> Option<String> {
    census::count(|| format!("get_response_header:{name}"));
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
}

/// The answer's status code, when it has a readable one.
pub fn response_status() -> Option<u16> {
    response_header_text(":status").and_then(|s| s.parse().ok())
}

pub fn remove_response_header(name: &str) {
    census::count(|| format!("remove_response_header:{name}"));
    let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name);
}

pub fn set_response_header(name: &str, value: &str) {
    census::count(|| format!("set_response_header:{name}"));
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
}

/// The request body buffered so far (`size` bytes from the start).
pub fn request_body(size: usize) -> Option<Vec<u8>> {
    census::count(|| "get_request_body".into());
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
}

/// Replaces the whole buffered request body of `current_size` bytes.
pub fn replace_request_body(current_size: usize, body: &[u8]) -> bool {
    census::count(|| "set_request_body".into());
    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, current_size, body).is_ok()
}

/// Replaces the `current_size` bytes of the answer body this callback holds.
pub fn replace_response_body(current_size: usize, body: &[u8]) -> bool {
    census::count(|| "set_response_body".into());
    hostcalls::set_buffer(BufferType::HttpResponseBody, 0, current_size, body).is_ok()
}

pub fn set_request_path(path: &str) {
    census::count(|| "set_request_header::path".into());
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path));
}

/// The response body chunk of this callback (`size` bytes).
pub fn response_body(size: usize) -> Option<Vec<u8>> {
    census::count(|| "get_response_body".into());
    hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten()
}

/// Answers the client locally with a JSON body.
pub fn send_json(status: u16, body: &[u8]) {
    census::count(|| "send_http_response".into());
    if hostcalls::send_http_response(u32::from(status), vec![("content-type", "application/json")], Some(body)).is_err()
    {
        log::error!("could not send local reply");
    }
}

/// Answers the client locally.
pub fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) {
    census::count(|| "send_http_response".into());
    if hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body)).is_err() {
        log::error!("could not send local reply");
    }
}

/// Answers the client locally with an OpenAI-style error.
pub fn send_error(error: &ApiError) {
    let body = error.body();
    census::count(|| "send_http_response".into());
    if hostcalls::send_http_response(u32::from(error.status), error.headers(), Some(&body)).is_err() {
        log::error!("could not send local reply");
    }
}

/// Dispatches a callout; the answer arrives in `on_http_call_response` with the returned token.
pub fn dispatch(call: &Callout) -> Result<u32, CalloutError> {
    census::count(|| format!("dispatch:{}", call.cluster));
    call.validate()?;
    let timeout = call.timeout.max(Duration::from_millis(1));
    hostcalls::dispatch_http_call(&call.cluster, call.wire_headers(), call.body.as_deref(), Vec::new(), timeout)
        .map_err(|status| CalloutError::Dispatch(format!("{status:?} (is cluster `{}` defined?)", call.cluster)))
}

/// The answer to a callout, read in `on_http_call_response`. A callout that failed or timed out
/// has no headers (status 0); the maps are only read when the host says they exist.
pub fn callout_response(num_headers: usize, body_size: usize) -> CalloutResponse {
    census::count(|| "callout_response".into());
    let status = if num_headers > 0 {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let body = if body_size > 0 {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default()
    } else {
        Vec::new()
    };
    CalloutResponse { status, body }
}

/// Lets a paused request continue upstream.
pub fn resume_request() {
    census::count(|| "resume_http_request".into());
    if hostcalls::resume_http_request().is_err() {
        log::warn!("could not resume the request");
    }
}

/// Lets a paused answer continue to the client.
pub fn resume_response() {
    census::count(|| "resume_http_response".into());
    if hostcalls::resume_http_response().is_err() {
        log::warn!("could not resume the answer");
    }
}

/// Adds `body` to the answer body Envoy buffered for a paused answer, after its first `at`
/// bytes (a callout's reply may still write to it).
pub fn append_response_body(at: usize, body: &[u8]) -> bool {
    census::count(|| "set_response_body".into());
    hostcalls::set_buffer(BufferType::HttpResponseBody, at, 0, body).is_ok()
}

/// Makes later hostcalls act on another context of this VM (a paused request, from the root
/// context). `false` when that context is gone.
pub fn switch_context(context_id: u32) -> bool {
    census::count(|| "set_effective_context".into());
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn set_request_header(name: &str, value: &str) {
    census::count(|| format!("set_request_header:{name}"));
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

/// Makes Envoy pick the request's route again (after a module set the facts routes match on).
/// Only takes effect while the router has not seen the request yet (a buffer filter before it).
pub fn clear_route_cache() -> bool {
    census::count(|| "clear_route_cache".into());
    hostcalls::call_foreign_function("clear_route_cache", None).is_ok()
}

/// Adds a response trailer; only possible at the end of the answer body.
pub fn add_response_trailer(name: &str, value: &str) {
    census::count(|| format!("add_response_trailer:{name}"));
    let _ = hostcalls::add_map_value(MapType::HttpResponseTrailers, name, value);
}
