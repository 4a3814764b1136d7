//! # Sluice semantic cache
//!
//! Answers repeated and paraphrased chat prompts from Redis, without calling the provider, in
//! every chat schema a client speaks (Chat Completions; the Responses API, Anthropic Messages
//! and Gemini through their chat form, [`wire`]).
//!
//! - **Exact** ([`keys`]): a normalised key of everything that changes the answer (model,
//!   messages, tools, parameters; not `stream` or `user`) finds byte-for-byte repeats, however
//!   the JSON is formatted.
//! - **Index** ([`index`]): a Bloom filter of the answers Redis may hold, kept in Envoy's
//!   shared data and copied from Redis, so a new prompt's exact lookup costs no Redis call.
//! - **Semantic** ([`vector`], [`scripts`]): on an exact miss, the last user message (or the
//!   whole conversation) is embedded by an OpenAI-compatible `/v1/embeddings` service, and one
//!   Lua call in stock Redis finds the most similar cached prompts of the same namespace, model,
//!   system prompt and parameters, with cosine similarity at or above the threshold. The search
//!   compares at most `(lsh_bits + 1) * bucket_capacity` entries (256 by default), however many
//!   the cache holds; optional LSH buckets keep more entries searchable for the same cost.
//! - **Guard** ([`same_question`]): a similar prompt must also ask the same question, because
//!   embeddings put "capital of France" and "capital of Germany" close together: the same
//!   content words (WordNet synonyms forgiven, from a table built at compile time, [`lexicon`]),
//!   numbers, negation, question words and conversion direction.
//! - **Verifier** ([`verify`], optional): a rerank service or a chat model settles the guard's
//!   grey zone; verdicts are kept per pair, and failures leave the guard's miss.
//! - **Serving** ([`record`]): a hit is answered locally as JSON or as a replayed SSE stream,
//!   with `x-sluice-cache: hit` and `x-sluice-cache-similarity`.
//! - **Storing**: a successful answer to a miss is kept with a TTL (not errors, not cut streams,
//!   not tool calls unless configured). `Cache-Control: no-cache` / `no-store` are honoured;
//!   answers to prompts the PII scrubber changed are never kept ([`lookup`]).
//! - **Tenants**: entries live in a namespace per team, per key or global; a request without
//!   the identity its namespace needs bypasses the cache.
//! - **Failures**: Redis or the embedding service down means `x-sluice-cache: bypass` and the
//!   request goes upstream, never an error.
//!
//! Facts `sluice.cache.*` and metrics `sluice_cache_*` ([`report`]) give the hit rate and the
//! lookup and embedding latencies. [`exchange`] is the proxy-wasm glue.

mod config;
mod exchange;
mod index;
mod keys;
mod lexicon;
mod lookup;
mod record;
mod report;
pub mod same_question;
mod scripts;
mod vector;
mod verify;
mod wire;
mod words;

sluice_shared::entry!(exchange::SemanticCache);
