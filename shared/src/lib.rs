//! `sluice-shared`: what every Sluice plugin needs, in plain Rust.
//!
//! Everything here is host-independent and unit-tested natively and compiled to wasm. The one
//! exception is [`proxy`] (feature `proxy`), the thin glue that implements the [`host`] traits on
//! top of proxy-wasm hostcalls.

pub mod anthropic;
pub mod api;
pub mod backlog;
pub mod callout;
pub mod chain;
pub mod config;
pub mod digest;
pub mod errors;
pub mod facts;
pub mod glob;
pub mod host;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod pricing;
pub mod prompt;
pub mod redis;
pub mod sse;
pub mod stream_tally;
pub mod tokenizer;
pub mod usage;
pub mod window;

#[cfg(feature = "proxy")]
pub mod proxy;
