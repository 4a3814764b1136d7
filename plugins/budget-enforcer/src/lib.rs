//! # Sluice budget enforcer
//!
//! Lets a platform team hand out virtual keys and never be surprised by a bill.
//!
//! - **Identity** ([`keys`]): the key comes from `Authorization: Bearer`, `x-api-key`,
//!   `x-goog-api-key` or a `key=` query parameter (each client schema's own), is hashed (SHA-256)
//!   and found among the configured keys or in Redis; it never goes upstream, and the query
//!   parameter is taken out of the path.
//!   No key or an unknown one: 401; a model the key may not use: 403. The key's alias, team and
//!   user (and its allow-list, for the model rewriter) are published as facts
//!   (`sluice.identity.*`).
//! - **Default deny**: only the LLM APIs and the model list are admitted; any other method or
//!   path gets 404 unless `passthrough` lets the key's team or alias use it. A body with a
//!   duplicate member name, or none on an API path, gets 400. Under a USD limit a model without
//!   a price is refused, or estimated and charged at `unpriced.price`.
//! - **Limits** ([`limits`], [`verdict`]): requests, tokens and USD per key, team, user, model
//!   or globally, per second, minute, hour, day or calendar month. One atomic Lua call in Redis
//!   ([`scripts`]) checks every counter and reserves the request's share (one request, the
//!   prompt estimate, its cost). A full limit rejects (429 with `Retry-After` and OpenAI's
//!   `x-ratelimit-*`), queues the request until there is room, or downgrades it to a cheaper
//!   model. Soft limits (`alert_at`) count an alert and add `x-sluice-budget-alert`.
//! - **Leases** ([`lease`]): that call may grant a worker more room than the request needs; the
//!   next requests are admitted against it without a callout. Leases shrink as a counter fills
//!   and unused room goes back to Redis, so the total admitted never exceeds a limit.
//! - **Spend** ([`ledger`]): once every module has seen the answer, the reservation is settled
//!   against the usage the token counter measured (streams cut short included). Charges are sent
//!   in batches by the worker's tick, exactly once, and wait in shared data while the bridge is
//!   down. On the request path a failing bridge means fail open (each worker enforces the
//!   limits alone, [`local`]) or fail closed (503), as configured.
//!
//! The logic is plain Rust in the modules above; [`gate`] (per request) and [`worker`] (per
//! worker) are the proxy-wasm glue.

mod attribution;
mod config;
mod gate;
mod keys;
mod lease;
mod ledger;
mod limits;
mod local;
mod report;
mod scripts;
mod state;
mod tokens;
mod verdict;
mod worker;

sluice_shared::entry!(worker::BudgetEnforcer);
