//! The proxy-wasm glue: one request's way through the cache.
//!
//! Request: complete body → exact index → (maybe) exact `GET` → (miss) embedding callout → Lua
//! search → the guard's choice → (grey zone, with a verifier) verifier callout → hit served
//! locally, or the request continues upstream. Answer to a miss: read as it passes (JSON or
//! SSE, never held back) and stored once complete.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Action;
use sluice_shared::api::Api;
use sluice_shared::callout::{Callout, CalloutResponse};
use sluice_shared::host::Clock;
use sluice_shared::metrics::MetricRegistry;
use sluice_shared::plugin::{self, Module};
use sluice_shared::proxy::{self, Host};
use sluice_shared::redis::{as_args, RedisValue};
use sluice_shared::sse::SseParser;

use crate::config::{Config, Mode, Policy};
use crate::index::{Answer, Index, Sync};
use crate::keys::{CacheRequest, Keys};
use crate::lookup::{self, Bypass, CacheControl, Choice, Guard, Hit};
use crate::record::{Record, Skip, StreamAnswer};
use crate::report::{self, Outcome, Timings};
use crate::scripts::{self, Scripts};
use crate::vector::{self, Embedding, Encoded, Planes};
use crate::verify::{self, Verdicts};
use crate::wire::{ChatStream, Foreign};

const NAME: &str = "sluice.semantic_cache";
/// Distinct values kept per metric label.
const MAX_LABEL_VALUES: usize = 50;
/// Headers of a hit: what the stored answer cost when the provider generated it.
const CACHED_PROMPT_TOKENS: &str = "x-sluice-cache-prompt-tokens";
const CACHED_COMPLETION_TOKENS: &str = "x-sluice-cache-completion-tokens";
/// Header of a hit the verifier confirmed.
const VERIFIED: &str = "x-sluice-cache-verified";
/// Header of a hit: the entry's id, for a complaint ([`lookup::WRONG_HEADER`]).
const ENTRY: &str = "x-sluice-cache-entry";

/// What every request of a configuration shares.
struct Shared {
    config: Config,
    scripts: Scripts,
    /// Scope tag of the embedding model and bucketing (see [`vector::embed_salt`]).
    salt: String,
    registry: RefCell<MetricRegistry>,
    /// Redis has the search script (a `NOSCRIPT` reply resets it).
    search_cached: Cell<bool>,
    /// Hyperplanes for the embedding model's vector length, built on its first vector.
    planes: RefCell<Option<Rc<Planes>>>,
    index: Option<Index>,
    /// The verifier's verdicts by pair of questions.
    verdicts: RefCell<Verdicts>,
}

impl Shared {
    /// Encodes an embedding for Redis, with the planes of its length (built once per VM).
    fn encode(&self, embedding: &Embedding) -> Encoded {
        let mut planes = self.planes.borrow_mut();
        let current = match planes.as_ref() {
            Some(built) if built.dimensions() == embedding.dimensions() => Rc::clone(built),
            _ => {
                let built = Rc::new(Planes::new(embedding.dimensions()));
                *planes = Some(Rc::clone(&built));
                built
            }
        };
        current.encode(embedding, self.config.lsh_bits)
    }
}

/// The cache's per-worker side.
pub struct SemanticCache {
    shared: Option<Rc<Shared>>,
    /// This worker's copying of the exact index from Redis.
    sync: Sync,
}

impl SemanticCache {
    /// Asks Redis for the index pages changed since the last copy.
    fn sync_index(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let Some(index) = &shared.index else { return };
        let now = Host.now_ms();
        if !self.sync.due(now, 2 * shared.config.redis.timeout_ms + index.sync_ms()) {
            return;
        }
        let (keys, args) = self.sync.call(index, now);
        let command = shared.scripts.sync.call(false, &keys, &args);
        if let Err(e) = proxy::dispatch(&shared.config.redis.command(&as_args(&command))) {
            log::debug!("{NAME}: index copy not sent: {e:?}");
            self.sync.failed();
        }
    }
}

impl Module for SemanticCache {
    const NAME: &'static str = NAME;
    type Config = Config;

    fn new(_root_context_id: u32) -> Self {
        SemanticCache { shared: None, sync: Sync::default() }
    }

    fn configure(&mut self, config: Config) -> Result<(), String> {
        if config.embedding.api_key_env.is_some() && config.embedding.api_key().is_none() {
            log::warn!("{NAME}: `embedding.api_key_env` is set but the variable is empty or not passed to the VM");
        }
        log::info!(
            "{NAME}: configured; mode {:?}, threshold {}, namespace {:?}, ttl {}s, embedding cluster `{}`",
            config.mode,
            config.threshold,
            config.namespace,
            config.ttl_seconds,
            config.embedding.cluster
        );
        let salt = vector::embed_salt(&config.embedding.model, config.lsh_bits);
        let index = config.exact_index.enabled.then(|| Index::new(&config.exact_index));
        self.sync = Sync::default();
        self.shared = Some(Rc::new(Shared {
            config,
            scripts: Scripts::default(),
            salt,
            registry: RefCell::new(MetricRegistry::new(MAX_LABEL_VALUES)),
            search_cached: Cell::new(false),
            planes: RefCell::new(None),
            index,
            verdicts: RefCell::new(Verdicts::default()),
        }));
        Ok(())
    }

    fn filter(&self, _context_id: u32) -> Box<dyn HttpContext> {
        let Some(shared) = self.shared.clone() else { return plugin::unconfigured::<Self>() };
        plugin::stream(Filter::new(shared))
    }

    /// The exact index is copied from Redis on every tick.
    fn tick(&self) -> Option<std::time::Duration> {
        let index = self.shared.as_ref()?.index.as_ref()?;
        Some(std::time::Duration::from_millis(index.sync_ms()))
    }

    fn on_tick(&mut self) {
        self.sync_index();
    }

    /// The exact index's copy from Redis.
    fn on_callout(&mut self, _token: u32, response: &CalloutResponse) {
        let Some(shared) = self.shared.clone() else { return };
        let Some(index) = &shared.index else { return };
        let copied = match shared.config.redis.reply(response) {
            Ok(reply) => self.sync.absorb(index, &Host, &reply, Host.now_ms()),
            Err(e) => {
                log::debug!("{NAME}: index copy failed: {e}");
                self.sync.failed();
                return;
            }
        };
        match copied {
            // More pages changed than one reply holds: go on at once.
            Some(false) => self.sync_index(),
            Some(true) => {}
            None => log::warn!("{NAME}: unreadable reply from the index copy script"),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not a chat completion, or already decided.
    Idle,
    ReadingBody,
    ExactLookup,
    Embedding,
    Searching {
        resent: bool,
    },
    /// The verifier is asked about a grey-zone candidate.
    Verifying,
    /// A complaint about an earlier hit is recorded.
    Complaining,
    /// Answered from the cache.
    Served,
    /// The answer was sent to Redis; its reply arrives if the request is still open.
    Storing,
}

/// How a miss's answer is being collected for storage.
enum Collecting {
    Json(Vec<u8>),
    /// A client's stream of another schema is turned into chat chunks as it passes.
    Stream(Box<(SseParser, Option<ChatStream>, StreamAnswer)>),
}

/// What a miss's answer will be stored under.
struct StorePlan {
    keys: Keys,
    exact: String,
    ttl_seconds: u64,
    entry: Option<scripts::Entry>,
}

struct Filter {
    shared: Rc<Shared>,
    phase: Phase,
    control: CacheControl,
    path: String,
    host: String,
    request: Option<CacheRequest>,
    /// The client speaks another chat schema than Chat Completions.
    foreign: Option<Foreign>,
    policy: Option<Policy>,
    keys: Option<Keys>,
    outcome: Option<Outcome>,
    timings: Timings,
    started_ms: u64,
    embedding_started_ms: u64,
    /// The prompt's embedding, encoded for Redis (searched, then stored with the answer).
    encoded: Option<Encoded>,
    /// Whether a successful answer is to be stored.
    store: bool,
    /// The grey-zone candidate the verifier is asked about, and its pair key.
    asking: Option<(u64, Hit)>,
    /// The entry an earlier hit came from, which this request says was wrong.
    complaint: Option<String>,
    /// The verifier's word on the candidate served.
    verified: Option<&'static str>,
    collecting: Option<Collecting>,
}

impl Filter {
    fn new(shared: Rc<Shared>) -> Self {
        Filter {
            shared,
            phase: Phase::Idle,
            control: CacheControl::default(),
            path: String::new(),
            host: String::new(),
            request: None,
            foreign: None,
            policy: None,
            keys: None,
            outcome: None,
            timings: Timings::default(),
            started_ms: 0,
            embedding_started_ms: 0,
            encoded: None,
            store: false,
            asking: None,
            complaint: None,
            verified: None,
            collecting: None,
        }
    }

    /// Records the outcome (facts, metrics) once.
    fn decide(&mut self, outcome: Outcome) {
        if self.outcome.is_some() {
            return;
        }
        if self.started_ms > 0 {
            self.timings.lookup_ms = Some(Host.now_ms().saturating_sub(self.started_ms));
        }
        report::lookup(&Host, &mut self.shared.registry.borrow_mut(), &outcome, self.timings);
        self.outcome = Some(outcome);
    }

    fn bypass(&mut self, why: Bypass) -> Action {
        if matches!(why, Bypass::RedisDown) {
            self.store = false;
        }
        self.decide(Outcome::Bypass(why.name()));
        self.phase = Phase::Idle;
        Action::Continue
    }

    /// The whole request is here: decide whether to look it up, and start.
    fn start(&mut self, body: &[u8]) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        // The route's policy is resolved once, as soon as the model is read.
        let mut resolved = None;
        let semantic = |model: &str| {
            let policy = config.policy(&self.path, &self.host, model);
            resolved = Some(policy);
            (policy.mode == Mode::Semantic).then_some(config.embed)
        };
        let chat = match self.foreign {
            Some(foreign) => foreign.chat_request(&self.path, body),
            None => Some(body.to_vec()),
        };
        let request = chat.and_then(|chat| CacheRequest::parse(&chat, semantic, &shared.salt));
        let (Some(request), Some(policy)) = (request, resolved) else {
            return self.bypass(Bypass::Unreadable);
        };
        if policy.mode == Mode::Off {
            return self.bypass(Bypass::Off);
        }
        if lookup::pii_scrubbed(&Host) {
            return self.bypass(Bypass::Pii);
        }
        let Some(namespace) = lookup::namespace(&Host, config.namespace) else {
            return self.bypass(Bypass::NoIdentity);
        };
        let keys = Keys::new(&namespace);
        let answer_key = keys.answer(&request.exact);
        self.store = !self.control.no_store;
        self.request = Some(request);
        self.policy = Some(policy);
        self.keys = Some(keys);
        if let Some(id) = self.complaint.clone() {
            return self.complain(&id);
        }
        if self.control.no_cache {
            return self.bypass(Bypass::NoCache);
        }
        self.started_ms = Host.now_ms();
        if let Some(index) = &shared.index {
            let answer = index.answer(&Host, &index.slot(&answer_key), self.started_ms);
            report::index(&Host, &mut shared.registry.borrow_mut(), answer.name());
            if answer == Answer::Absent {
                return self.semantic_or_miss();
            }
        }
        let command = [&b"GET"[..], answer_key.as_bytes()];
        self.send(&config.redis.command(&command), Phase::ExactLookup, Bypass::RedisDown)
    }

    /// Records that a hit from entry `id` was wrong: the very request that was answered (same
    /// exact hash) evicts the entry; a paraphrase makes it stricter, then evicts it.
    fn complain(&mut self, id: &str) -> Action {
        let shared = Rc::clone(&self.shared);
        let (Some(keys), Some(request)) = (&self.keys, &self.request) else { return self.bypass(Bypass::Wrong) };
        let kind = if request.exact == id { "exact" } else { "semantic" };
        let evict_after = shared.config.evict_after.to_string();
        let command =
            shared.scripts.wrong.call(false, &[keys.answer(id), keys.entry(id)], &[kind, evict_after.as_str()]);
        self.send(&shared.config.redis.command(&as_args(&command)), Phase::Complaining, Bypass::Wrong)
    }

    fn on_complained(&mut self, response: &CalloutResponse) -> Action {
        let decision = match self.shared.config.redis.reply(response) {
            Ok(RedisValue::Text(text)) if matches!(text.as_str(), "evicted" | "stricter" | "unknown") => text,
            other => {
                log::warn!("{NAME}: complaint not recorded: {other:?}");
                "unrecorded".to_string()
            }
        };
        report::complaint(&Host, &mut self.shared.registry.borrow_mut(), &decision);
        self.bypass(Bypass::Wrong)
    }

    fn send(&mut self, call: &Callout, phase: Phase, on_failure: Bypass) -> Action {
        match proxy::dispatch(call) {
            Ok(_) => {
                self.phase = phase;
                Action::Pause
            }
            Err(e) => {
                log::warn!("{NAME}: callout to `{}` not sent: {e:?}", call.cluster);
                self.bypass(on_failure)
            }
        }
    }

    /// Decides from a paused state and lets the request go on unless it was answered.
    fn resume_after(&mut self, action: Action) {
        if action == Action::Continue {
            proxy::resume_request();
        }
    }

    fn miss(&mut self) -> Action {
        self.decide(Outcome::Miss);
        self.phase = Phase::Idle;
        Action::Continue
    }

    fn on_exact(&mut self, response: &CalloutResponse) -> Action {
        let reply = self.shared.config.redis.reply(response);
        match reply {
            Ok(RedisValue::Text(text)) => match Record::from_text(&text) {
                Some(record) => {
                    let id = self.request.as_ref().map(|r| r.exact.clone()).unwrap_or_default();
                    self.serve(&Hit { similarity: 1.0, record, id }, false)
                }
                None => self.semantic_or_miss(),
            },
            Ok(_) => self.semantic_or_miss(),
            Err(e) => {
                log::warn!("{NAME}: exact lookup failed: {e}");
                self.bypass(Bypass::RedisDown)
            }
        }
    }

    fn semantic_or_miss(&mut self) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let query = self.request.as_ref().and_then(|r| r.semantic.as_ref());
        let wanted = self.policy.is_some_and(|p| p.mode == Mode::Semantic);
        let Some(query) = query.filter(|q| wanted && q.text.chars().count() <= config.max_embed_chars) else {
            return self.miss();
        };
        let e = &config.embedding;
        // A module before this one (the guard's similarity check) may have embedded this very text.
        self.embedding_started_ms = Host.now_ms();
        if let Some(answer) = e.reuse(&Host, &query.text) {
            return self.on_embedding(&CalloutResponse { status: 200, body: answer });
        }
        let call = e.callout(std::slice::from_ref(&query.text), std::time::Duration::from_millis(e.timeout_ms));
        self.send(&call, Phase::Embedding, Bypass::EmbedderDown)
    }

    fn on_embedding(&mut self, response: &CalloutResponse) -> Action {
        self.timings.embedding_ms = Some(Host.now_ms().saturating_sub(self.embedding_started_ms));
        let embedding = if response.is_success() { Embedding::from_answer(&response.body) } else { None };
        let Some(embedding) = embedding else {
            log::warn!("{NAME}: embedding service answered HTTP {} without a usable vector", response.status);
            return self.bypass(Bypass::EmbedderDown);
        };
        // The model rewriter's semantic routes embed the same text: they reuse this one.
        if let Some(query) = self.request.as_ref().and_then(|r| r.semantic.as_ref()) {
            self.shared.config.embedding.share(&Host, &query.text, &response.body);
        }
        self.encoded = Some(self.shared.encode(&embedding));
        self.search(false)
    }

    fn search(&mut self, resent: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let (Some(encoded), Some(request), Some(keys), Some(policy)) =
            (&self.encoded, &self.request, &self.keys, self.policy)
        else {
            return self.miss();
        };
        let Some(query) = &request.semantic else { return self.miss() };
        let buckets: Vec<String> =
            vector::probes(encoded.bucket, config.lsh_bits).into_iter().map(|b| keys.bucket(&query.scope, b)).collect();
        let args = scripts::search_args(
            &encoded.bytes,
            &encoded.signature,
            policy.threshold,
            config.contradicted_threshold.max(policy.threshold),
            config.bucket_capacity,
            &keys.entry_prefix(),
        );
        let command = shared.scripts.search.call(shared.search_cached.get(), &buckets, &args);
        self.send(&config.redis.command(&as_args(&command)), Phase::Searching { resent }, Bypass::RedisDown)
    }

    fn on_search(&mut self, response: &CalloutResponse, resent: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let found = match shared.config.redis.reply(response) {
            Ok(reply) => {
                shared.search_cached.set(true);
                scripts::read_search(&reply)
            }
            Err(e) if e.is_noscript() && !resent => {
                shared.search_cached.set(false);
                return self.search(true);
            }
            Err(e) => {
                log::warn!("{NAME}: semantic lookup failed: {e}");
                return self.bypass(Bypass::RedisDown);
            }
        };
        let Some(found) = found else {
            log::warn!("{NAME}: unreadable reply from the search script");
            return self.bypass(Bypass::RedisDown);
        };
        let question =
            self.request.as_ref().and_then(|r| r.semantic.as_ref()).map(|q| q.text.clone()).unwrap_or_default();
        let config = &shared.config;
        let threshold = self.policy.map_or(config.threshold, |p| p.threshold);
        let guard = config.guard.then_some(Guard { threshold, close_margin: config.close_margin });
        match lookup::pick(found.candidates, &question, guard) {
            Choice::Serve(hit) => self.serve(&hit, true),
            Choice::Ask { hit, question: cached } => self.verify(&question, &cached, hit),
            Choice::Miss => self.miss(),
        }
    }

    /// Asks the verifier about a grey-zone candidate, unless it decided the pair before.
    fn verify(&mut self, question: &str, cached: &str, hit: Hit) -> Action {
        let shared = Rc::clone(&self.shared);
        let Some(verifier) = &shared.config.verify else { return self.miss() };
        let key = verify::pair_key(question, cached);
        let known = shared.verdicts.borrow().get(key);
        if let Some(same) = known {
            return self.verdict(Some(same), "memo", &hit);
        }
        let call = Callout::post(
            &verifier.cluster,
            &verifier.authority,
            verifier.path(),
            "application/json",
            verify::request_body(verifier, question, cached),
        )
        .timeout(std::time::Duration::from_millis(verifier.timeout_ms));
        match proxy::dispatch(&call) {
            Ok(_) => {
                self.asking = Some((key, hit));
                self.phase = Phase::Verifying;
                Action::Pause
            }
            Err(e) => {
                log::warn!("{NAME}: callout to verifier `{}` not sent: {e:?}", verifier.cluster);
                self.verdict(None, "service", &hit)
            }
        }
    }

    fn on_verified(&mut self, response: &CalloutResponse) -> Action {
        let shared = Rc::clone(&self.shared);
        let (Some(verifier), Some((key, hit))) = (&shared.config.verify, self.asking.take()) else {
            return self.miss();
        };
        let same = if response.is_success() { verify::read_answer(verifier, &response.body) } else { None };
        if same.is_none() {
            log::warn!("{NAME}: verifier answered HTTP {} without a usable verdict", response.status);
        }
        if let Some(same) = same {
            shared.verdicts.borrow_mut().put(key, same, verifier.cache_entries);
        }
        self.verdict(same, "service", &hit)
    }

    /// Serves or misses as the verifier said; without a verdict the guard's miss stands.
    fn verdict(&mut self, same: Option<bool>, source: &str, hit: &Hit) -> Action {
        let decision = match same {
            Some(true) => "same",
            Some(false) => "different",
            None => "none",
        };
        report::verified(&Host, &mut self.shared.registry.borrow_mut(), decision, source);
        if same == Some(true) {
            self.verified = Some(decision);
            return self.serve(hit, true);
        }
        self.miss()
    }

    /// Answers from the cache, in the shape the client asked for: zero usage in the body, the
    /// stored answer's token counts in headers.
    fn serve(&mut self, hit: &Hit, semantic: bool) -> Action {
        let (record, outcome) = (&hit.record, Outcome::Hit { semantic, similarity: hit.similarity });
        let (stream, include_usage, exact) =
            self.request.as_ref().map(|r| (r.stream, r.include_usage, r.exact.clone())).unwrap_or_default();
        let now = Host.now_ms();
        let id = format!("chatcmpl-cache-{}{now:x}", exact.get(..12).unwrap_or_default());
        let created = now / 1000;
        let (content_type, body) = match (stream, self.foreign) {
            (true, None) => ("text/event-stream", record.sse(&id, created, include_usage)),
            (false, None) => ("application/json", record.json(&id, created)),
            (true, Some(foreign)) => ("text/event-stream", foreign.sse(&record.sse(&id, created, true), created)),
            (false, Some(foreign)) => {
                let Some(body) = foreign.json(&record.json(&id, created), created) else {
                    return self.miss();
                };
                ("application/json", body)
            }
        };
        let mut extra = outcome.headers();
        extra.push((ENTRY, hit.id.clone()));
        if let Some(verified) = self.verified {
            extra.push((VERIFIED, verified.to_string()));
        }
        if let Some((prompt, completion)) = record.original_tokens() {
            extra.push((CACHED_PROMPT_TOKENS, prompt.to_string()));
            extra.push((CACHED_COMPLETION_TOKENS, completion.to_string()));
        }
        let mut headers: Vec<(&str, &str)> = vec![("content-type", content_type)];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        self.decide(outcome);
        self.store = false;
        self.phase = Phase::Served;
        proxy::send_response(200, &headers, &body);
        Action::Pause
    }

    /// What the answer to this miss is stored under, if it is to be stored.
    fn store_plan(&self) -> Option<StorePlan> {
        if !self.store {
            return None;
        }
        let (request, keys, policy) = (self.request.as_ref()?, self.keys.as_ref()?, self.policy?);
        let entry = match (&self.encoded, &request.semantic) {
            (Some(encoded), Some(query)) => Some(scripts::Entry {
                key: keys.entry(&request.exact),
                bucket: keys.bucket(&query.scope, encoded.bucket),
                vector: encoded.bytes.clone(),
                norm: encoded.norm,
                question: query.text.clone(),
                item: scripts::bucket_item(&encoded.signature, &request.exact),
                capacity: self.shared.config.bucket_capacity,
            }),
            _ => None,
        };
        Some(StorePlan { keys: keys.clone(), exact: request.exact.clone(), ttl_seconds: policy.ttl_seconds, entry })
    }

    fn skip_store(&mut self, why: &str) {
        self.store = false;
        report::store(&Host, &mut self.shared.registry.borrow_mut(), "skipped", why);
    }

    fn store_answer(&mut self, record: Result<Record, Skip>) {
        let record = match record {
            Ok(record) => record,
            Err(skip) => return self.skip_store(skip.name()),
        };
        let Some(plan) = self.store_plan() else { return };
        self.store = false;
        let shared = Rc::clone(&self.shared);
        let config = &shared.config;
        let now = Host.now_ms();
        let answer_key = plan.keys.answer(&plan.exact);
        let slot = shared.index.as_ref().map(|index| index.slot(&answer_key));
        let bits = shared.index.as_ref().zip(slot.as_ref()).map(|(index, slot)| index.bits(slot, now));
        let (keys, args) = scripts::store_args(&answer_key, record.to_text(), plan.ttl_seconds, plan.entry, bits);
        // `EVAL`, not `EVALSHA`: the reply may arrive after this request is gone, so the call
        // must not depend on a retry.
        let command = shared.scripts.store.call(false, &keys, &args);
        let status = match proxy::dispatch(&config.redis.command(&as_args(&command))) {
            Ok(_) => {
                self.phase = Phase::Storing;
                // Every worker of this Envoy knows of the answer from now on.
                if let (Some(index), Some(slot)) = (&shared.index, &slot) {
                    index.add(&Host, slot, now);
                }
                "sent"
            }
            Err(e) => {
                log::warn!("{NAME}: answer not stored: {e:?}");
                "failed"
            }
        };
        report::store(&Host, &mut shared.registry.borrow_mut(), status, "none");
    }

    /// Redis's reply to a store, when it arrives before the request is closed.
    fn on_stored(&mut self, response: &CalloutResponse) {
        if let Err(e) = self.shared.config.redis.reply(response) {
            log::warn!("{NAME}: answer not stored: {e}");
            report::store(&Host, &mut self.shared.registry.borrow_mut(), "failed", "redis");
        }
    }
}

impl plugin::Filter for Filter {
    fn on_callout(&mut self, _token: u32, response: &CalloutResponse) {
        let action = match self.phase {
            Phase::ExactLookup => self.on_exact(response),
            Phase::Embedding => self.on_embedding(response),
            Phase::Searching { resent } => self.on_search(response, resent),
            Phase::Verifying => self.on_verified(response),
            Phase::Complaining => self.on_complained(response),
            Phase::Storing => return self.on_stored(response),
            Phase::Idle | Phase::ReadingBody | Phase::Served => return,
        };
        self.resume_after(action);
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let method = proxy::request_header_text(":method").unwrap_or_default();
        self.path = proxy::request_header_text(":path").unwrap_or_default();
        let api = if method == "POST" { Api::from_path(&self.path) } else { None };
        match api {
            None => return Action::Continue,
            Some(Api::ChatCompletions) if !end_of_stream => {}
            Some(api) if !end_of_stream && Foreign::of(api).is_some() => self.foreign = Foreign::of(api),
            Some(Api::ChatCompletions) => return self.bypass(Bypass::Unreadable),
            Some(api) if Foreign::of(api).is_some() => return self.bypass(Bypass::Unreadable),
            Some(_) => return self.bypass(Bypass::Api),
        }
        self.host = proxy::request_header_text(":authority").unwrap_or_default();
        self.control = CacheControl::parse(proxy::request_header("cache-control").as_deref());
        self.complaint = lookup::complaint(proxy::request_header(lookup::WRONG_HEADER).as_deref());
        self.phase = Phase::ReadingBody;
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        (self.phase == Phase::ReadingBody).then_some(self.shared.config.max_request_bytes)
    }

    /// The cache is no gate: a body too large to look up goes to the provider.
    fn on_body_too_large(&mut self, _limit: usize) -> Action {
        self.bypass(Bypass::TooLarge)
    }

    fn on_request_body(&mut self, body: Vec<u8>, _size: usize) -> Action {
        self.start(&body)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        if self.phase == Phase::Served {
            return Action::Continue;
        }
        let Some(outcome) = &self.outcome else { return Action::Continue };
        for (name, value) in outcome.headers() {
            proxy::set_response_header(name, &value);
        }
        if !self.store {
            return Action::Continue;
        }
        let status = proxy::response_status();
        let content_type = proxy::response_header_text("content-type").unwrap_or_default().to_ascii_lowercase();
        let encoded =
            proxy::response_header_text("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        if status != Some(200) {
            self.skip_store("status");
        } else if encoded {
            self.skip_store("encoded");
        } else if content_type.starts_with("text/event-stream") {
            let max = self.shared.config.max_entry_bytes;
            let chat = self.foreign.map(|f| f.chat_stream(Host.now_ms() / 1000));
            self.collecting = Some(Collecting::Stream(Box::new((SseParser::new(max), chat, StreamAnswer::new(max)))));
        } else if content_type.contains("json") {
            self.collecting = Some(Collecting::Json(Vec::new()));
        } else {
            self.skip_store("unreadable");
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut collecting) = self.collecting.take() else { return Action::Continue };
        let chunk = proxy::response_body(body_size).unwrap_or_default();
        let max = self.shared.config.max_entry_bytes;
        let tool_calls = self.shared.config.cache_tool_calls;
        match &mut collecting {
            Collecting::Json(body) => {
                if body.len() + chunk.len() > max {
                    self.skip_store(Skip::TooLarge.name());
                    return Action::Continue;
                }
                body.extend_from_slice(&chunk);
            }
            Collecting::Stream(state) => {
                let (parser, chat, answer) = &mut **state;
                let mut events = parser.push(&chunk);
                if end_of_stream {
                    events.extend(parser.finish());
                }
                for event in events {
                    match chat {
                        Some(chat) => {
                            chat.push(event.event.as_deref(), &event.data).iter().for_each(|c| answer.push(c))
                        }
                        None => answer.push(&event.data),
                    }
                }
                if let (true, Some(chat)) = (end_of_stream, chat) {
                    chat.finish().iter().for_each(|c| answer.push(c));
                }
            }
        }
        if !end_of_stream {
            self.collecting = Some(collecting);
            return Action::Continue;
        }
        let record = match collecting {
            Collecting::Json(body) => match self.foreign {
                Some(foreign) => foreign
                    .chat_answer(&body, Host.now_ms() / 1000)
                    .ok_or(Skip::Unreadable)
                    .and_then(|chat| Record::from_json(&chat, tool_calls)),
                None => Record::from_json(&body, tool_calls),
            },
            Collecting::Stream(state) => {
                let (parser, _, answer) = *state;
                if parser.overflowed() {
                    Err(Skip::TooLarge)
                } else {
                    answer.finish(tool_calls)
                }
            }
        };
        self.store_answer(record);
        Action::Continue
    }
}
