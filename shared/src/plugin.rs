//! The skeleton every module is built on: a [`Module`] (configuration and per-worker state,
//! behind one root context) and a [`Filter`] per request (behind one HTTP context).
//!
//! What no module should write again lives here:
//! - configuration: read, parsed and validated before the module sees it; a bad one is refused
//!   with the reason logged, so Envoy rejects the filter;
//! - the tick, set from what the module asks for after each configuration;
//! - callout answers, read once and handed over;
//! - the request body: buffered until it is whole (its last chunk or its trailers) and handed
//!   over whole, or declared too large, by [`crate::body::RequestBody`].

use std::marker::PhantomData;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use serde::de::DeserializeOwned;

use crate::body::{RequestBody, Step};
use crate::callout::CalloutResponse;
use crate::config::Validate;
use crate::errors::ApiError;
use crate::proxy;

/// A module's entry points, from its `Module` type: `root` (its root context, which the bundle
/// starts by root id) and, with the crate's `standalone` feature, the `.wasm` entry point that
/// starts it alone.
#[macro_export]
macro_rules! entry {
    ($module:ty) => {
        #[cfg(feature = "standalone")]
        proxy_wasm::main! {{
            $crate::proxy::init_logging();
            proxy_wasm::set_root_context(root);
        }}

        /// This module's root context: its own `.wasm` starts it, and so does the bundle, by root id.
        pub fn root(context_id: u32) -> Box<dyn proxy_wasm::traits::RootContext> {
            $crate::plugin::root::<$module>(context_id)
        }
    };
}

/// A module's per-worker side: one value per root context.
pub trait Module: Sized + 'static {
    /// The root id (Envoy `root_id`, Istio `pluginName`) and the prefix of its log lines.
    const NAME: &'static str;
    type Config: DeserializeOwned + Default + Validate;

    /// The state before any configuration.
    fn new(root_context_id: u32) -> Self;
    /// Takes a validated configuration, at start and on every update. `Err` refuses it.
    fn configure(&mut self, config: Self::Config) -> Result<(), String>;
    /// The filter of one request (only called once configured).
    fn filter(&self, context_id: u32) -> Box<dyn HttpContext>;
    /// How often [`Module::on_tick`] runs; `None`: never. Asked after each configuration and
    /// after each tick.
    fn tick(&self) -> Option<Duration> {
        None
    }
    fn on_tick(&mut self) {}
    /// The answer to a callout the root context sent.
    fn on_callout(&mut self, _token: u32, _response: &CalloutResponse) {}
    /// The worker is stopping.
    fn on_stop(&mut self) {}
}

impl<M: Module> Root<M> {
    /// Sets the tick to what the module asks for now (after a configuration, and after each
    /// tick: a module can slow down or stop its tick once its work is done).
    fn follow_tick(&mut self) {
        let wanted = self.module.tick();
        if wanted != self.tick {
            // A zero period stops the tick.
            self.set_tick_period(wanted.unwrap_or(Duration::ZERO));
            self.tick = wanted;
        }
    }
}

/// The root context of module `M`.
pub struct Root<M: Module> {
    module: M,
    configured: bool,
    tick: Option<Duration>,
}

/// Starts module `M`'s root context (`proxy_wasm::set_root_context`, or the bundle by root id).
pub fn root<M: Module>(context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root { module: M::new(context_id), configured: false, tick: None })
}

impl<M: Module> Context for Root<M> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let response = proxy::callout_response(num_headers, body_size);
        self.module.on_callout(token, &response);
    }

    fn on_done(&mut self) -> bool {
        self.module.on_stop();
        true
    }
}

impl<M: Module> RootContext for Root<M> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = proxy::load_config::<M::Config>(M::NAME) else { return false };
        if let Err(e) = self.module.configure(config) {
            log::error!("{}: invalid configuration: {e}", M::NAME);
            return false;
        }
        self.configured = true;
        self.follow_tick();
        true
    }

    fn on_tick(&mut self) {
        self.module.on_tick();
        self.follow_tick();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // (Returning `None` would trap the VM.)
        Some(if self.configured { self.module.filter(context_id) } else { unconfigured::<M>() })
    }
}

/// A module's per-request side. Every hook has a default that lets the request pass.
pub trait Filter: 'static {
    fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    /// The most request body bytes this request reads whole, asked at each chunk until the
    /// body was delivered; `None`: the body is not read and streams through.
    fn body_limit(&self) -> Option<usize> {
        None
    }
    /// The whole request body (`size` bytes in Envoy's buffer).
    fn on_request_body(&mut self, _body: Vec<u8>, _size: usize) -> Action {
        Action::Continue
    }
    /// The body passed [`Filter::body_limit`]: refuse the request (`413`) or let it pass unread.
    /// Each module declares which; nothing is read of it either way.
    fn on_body_too_large(&mut self, limit: usize) -> Action;
    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self) -> Action {
        Action::Continue
    }
    /// The answer to a callout this request sent.
    fn on_callout(&mut self, _token: u32, _response: &CalloutResponse) {}
    /// The access log is being written (after every filter's; also for a reset stream).
    fn on_log(&mut self) {}
    /// The stream is gone.
    fn on_done(&mut self) {}
}

/// The HTTP context of one request of `filter`.
pub fn stream<F: Filter>(filter: F) -> Box<dyn HttpContext> {
    Box::new(Stream { filter, body: RequestBody::default() })
}

/// The HTTP context of one request: buffers its body for `F` and forwards everything else.
struct Stream<F: Filter> {
    filter: F,
    body: RequestBody,
}

impl<F: Filter> Stream<F> {
    fn on_step(&mut self, step: Step) -> Action {
        match step {
            Step::Pass => Action::Continue,
            Step::Wait => Action::Pause,
            Step::TooLarge { limit } => self.filter.on_body_too_large(limit),
            Step::Whole { size } => {
                let body = proxy::request_body(size).unwrap_or_default();
                self.filter.on_request_body(body, size)
            }
        }
    }
}

impl<F: Filter> Context for Stream<F> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let response = proxy::callout_response(num_headers, body_size);
        self.filter.on_callout(token, &response);
    }

    fn on_done(&mut self) -> bool {
        self.filter.on_done();
        true
    }
}

impl<F: Filter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.filter.on_request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let step = self.body.on_chunk(body_size, end_of_stream, self.filter.body_limit());
        self.on_step(step)
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        let step = self.body.on_trailers(self.filter.body_limit());
        self.on_step(step)
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.filter.on_response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.filter.on_response_body(body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        self.filter.on_response_trailers()
    }

    fn on_log(&mut self) {
        self.filter.on_log();
    }
}

/// The filter of a module that has no configuration (Envoy sends no request to one; other hosts
/// might). Default deny: every request is refused.
pub fn unconfigured<M: Module>() -> Box<dyn HttpContext> {
    Box::new(Unconfigured(PhantomData::<M>))
}

struct Unconfigured<M>(PhantomData<M>);

impl<M: Module> Context for Unconfigured<M> {}

impl<M: Module> HttpContext for Unconfigured<M> {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        log::error!("{}: a request arrived before the module was configured; refused", M::NAME);
        proxy::send_error(&ApiError::unavailable("The gateway is not configured.").with_code("not_configured"));
        Action::Pause
    }
}
