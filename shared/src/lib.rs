//! `sluice-shared`: what every Sluice plugin needs, in plain Rust.
//!
//! Everything here is host-independent and unit-tested natively and compiled to wasm. The
//! exceptions (feature `proxy`) are [`proxy`], the thin glue that implements the [`host`] traits
//! on top of proxy-wasm hostcalls, and [`plugin`], the skeleton every module's glue is built on.
//!
//! Words, one per concept, in every crate:
//! - **request**: what the client sent (or what we send a provider in its place);
//! - **answer**: the provider's (or the cache's) reply to a request, its headers, body and stream
//!   (`MessagesAnswer`, `on_answer_chunk`);
//! - **response**: only where Envoy or proxy-wasm name an HTTP-level thing (`on_http_response_*`,
//!   [`callout::CalloutResponse`], response headers) or an API does (the Responses API,
//!   `response_format`);
//! - **reply**: what Redis returns to a command ([`redis`]);
//! - **fact**: a value published for the access log and the next module ([`facts`]). Public
//!   names (facts, metrics, config fields) keep the names operators already use.

pub mod anthropic;
pub mod api;
pub mod backlog;
pub mod bedrock;
pub mod body;
pub mod callout;
#[cfg(feature = "proxy")]
pub mod census;
pub mod chain;
pub mod config;
pub mod digest;
pub mod embeddings;
pub mod errors;
pub mod eventstream;
pub mod facts;
pub mod gemini;
pub mod glob;
pub mod host;
pub mod json;
pub mod metrics;
pub mod openai;
#[cfg(feature = "proxy")]
pub mod plugin;
pub mod pricing;
pub mod prompt;
pub mod redis;
pub mod sse;
pub mod stream_tally;
pub mod tokenizer;
pub mod translate;
pub mod usage;
pub mod window;

#[cfg(feature = "proxy")]
pub mod proxy;
