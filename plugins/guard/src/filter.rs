//! One request under the guards: its prompt checked before it goes on, its answer (JSON whole,
//! streams through [`crate::screen`]) before the client has it. The glue between Envoy's
//! callbacks and the plain logic of [`crate::texts`], [`crate::service`] and [`crate::verdict`].

use std::rc::Rc;

use proxy_wasm::types::Action;
use sluice_shared::api::Api;
use sluice_shared::callout::CalloutResponse;
use sluice_shared::errors::ApiError;
use sluice_shared::facts;
use sluice_shared::host::Clock;
use sluice_shared::metrics;
use sluice_shared::plugin;
use sluice_shared::prompt;
use sluice_shared::proxy::{self, Host};

use crate::config::{self, Action as Act, Direction, FailurePolicy, Kind, Plan};
use crate::screen::{self, Screen};
use crate::service::{self, Finding, Question, Reply, Trouble};
use crate::texts::{self, Said};
use crate::verdict::{self, Verdict};
use crate::{similarity, Shared, NAME};

/// A check the guards are answering.
struct Check {
    direction: Direction,
    /// (callout token, guard index) not yet answered.
    waiting: Vec<(u32, usize)>,
    verdict: Verdict,
    /// The texts the guards were shown.
    shown: Vec<String>,
    /// The texts a similarity guard embedded.
    embedded: Vec<String>,
    started_ms: u64,
    /// Streams: the text length checked.
    upto: usize,
}

impl Check {
    fn new(direction: Direction, shown: Vec<String>, embedded: Vec<String>, upto: usize) -> Check {
        Check {
            direction,
            waiting: Vec::new(),
            verdict: Verdict::default(),
            shown,
            embedded,
            started_ms: Host.now_ms(),
            upto,
        }
    }
}

/// How the answer is read.
enum Reading {
    /// Buffered whole; `size` bytes once complete.
    Json {
        size: usize,
    },
    Stream {
        screen: Box<Screen>,
        unsent: String,
        buffered: Option<usize>,
    },
}

pub(crate) struct Filter {
    shared: Rc<Shared>,
    api: Option<Api>,
    path: String,
    plan: Option<Plan>,
    model: String,
    prompt: Vec<Said>,
    /// The prompt's last user turn (what the semantic cache embeds).
    last_turn: Option<String>,
    /// The body under a check (the request's, then the answer's).
    body: Vec<u8>,
    check: Option<Check>,
    answer: Option<Reading>,
}

/// Publishes `decision` unless an earlier check (of either guard filter) decided more.
fn raise_decision(decision: &'static str) {
    let earlier = facts::read(&Host, facts::GUARD_DECISION);
    if earlier.as_deref().is_none_or(|e| verdict::rank(decision) > verdict::rank(e)) {
        facts::publish(&Host, facts::GUARD_DECISION, decision);
    }
}

impl Filter {
    pub(crate) fn new(shared: Rc<Shared>) -> Filter {
        Filter {
            shared,
            api: None,
            path: String::new(),
            plan: None,
            model: String::new(),
            prompt: Vec::new(),
            last_turn: None,
            body: Vec::new(),
            check: None,
            answer: None,
        }
    }

    fn guards(&self, direction: Direction) -> Vec<usize> {
        let config = &self.shared.config;
        let Some(plan) = &self.plan else { return Vec::new() };
        plan.guards.iter().copied().filter(|&i| config.guards.get(i).is_some_and(|g| g.checks(direction))).collect()
    }

    /// Sends `direction`'s guards the texts; `false` when none could be sent (decide at once).
    fn ask(&mut self, direction: Direction, answer: Option<&str>, upto: usize) -> bool {
        let shared = Rc::clone(&self.shared);
        let guards = self.guards(direction);
        let api = self.api.map(Api::name).unwrap_or_default();
        let embedded = texts::user_texts(&self.prompt, self.last_turn.as_deref(), similarity::MAX_TEXTS);
        let question =
            Question { direction, prompt: &self.prompt, answer, api, model: &self.model, embedded: &embedded };
        let shown: Vec<String> = question.judged().into_iter().map(|s| s.text).collect();
        let mut check = Check::new(direction, shown, embedded.clone(), upto);
        for i in guards {
            let Some(guard) = shared.config.guards.get(i) else { continue };
            let unready = guard.kind == Kind::Similarity && !shared.attacks.borrow().contains_key(&i);
            if unready || (guard.kind == Kind::Similarity && embedded.is_empty()) {
                // No examples embedded yet (or nothing the user wrote): counted as not answering.
                let reply = if unready { Err(Trouble::Timeout) } else { Ok(Reply::Findings(Vec::new())) };
                let result = check.verdict.add(guard, reply);
                self.count_check(&guard.name, direction, result, 0);
                continue;
            }
            match proxy::dispatch(&service::callout(guard, &question)) {
                Ok(token) => check.waiting.push((token, i)),
                Err(e) => {
                    log::warn!("{NAME}: guard `{}` not asked: {e:?}", guard.name);
                    let result = check.verdict.add(guard, Err(Trouble::Timeout));
                    self.count_check(&guard.name, direction, result, 0);
                }
            }
        }
        let sent = !check.waiting.is_empty();
        self.check = Some(check);
        sent
    }

    /// A similarity guard's vectors, scored against its attacks; the last user turn's vector is
    /// published for the semantic cache.
    fn score(
        &self,
        i: usize,
        guard: &config::Guard,
        embedded: &[String],
        vectors: &[Vec<f32>],
    ) -> Result<Reply, Trouble> {
        let attacks = self.shared.attacks.borrow();
        let score = attacks.get(&i).and_then(|a| a.score(vectors)).ok_or(Trouble::Garbage)?;
        if let (Some(last), Some(first), Some(vector)) = (&self.last_turn, embedded.first(), vectors.first()) {
            if last == first {
                let model = guard.model.as_deref().unwrap_or_default();
                facts::publish(
                    &Host,
                    facts::EMBEDDING_KEY,
                    &facts::embedding_key(&guard.authority, guard.path(), model, last),
                );
                facts::publish(&Host, facts::EMBEDDING_VECTOR, &similarity::single_answer(vector));
            }
        }
        let flagged = score >= similarity::DEFAULT_THRESHOLD;
        Ok(Reply::Findings(vec![Finding { category: similarity::CATEGORY.to_string(), score: Some(score), flagged }]))
    }

    fn count_check(&self, guard: &str, direction: Direction, result: &str, ms: u64) {
        let mut registry = self.shared.registry.borrow_mut();
        let labels = [("guard", guard), ("direction", direction.name())];
        registry.add(&Host, metrics::GUARD_CHECKS_TOTAL, &[labels[0], labels[1], ("result", result)], 1);
        registry.record(&Host, metrics::GUARD_CHECK_MS, &labels, ms);
    }

    /// Publishes what a complete check decided.
    fn report(&mut self, check: &Check) {
        let direction = check.direction.name();
        {
            let mut registry = self.shared.registry.borrow_mut();
            for hit in &check.verdict.hits {
                let labels = [
                    ("guard", hit.guard.as_str()),
                    ("category", hit.category.as_str()),
                    ("action", hit.action.name()),
                    ("direction", direction),
                ];
                registry.add(&Host, metrics::GUARD_CATEGORIES_TOTAL, &labels, 1);
            }
        }
        raise_decision(check.verdict.decision());
        let labels = check.verdict.labels();
        if !labels.is_empty() {
            // The facts gather both guard filters' checks (prompts and answers).
            for fact in [facts::GUARD_CATEGORIES, facts::GUARD_FLAGGED] {
                let earlier = facts::read(&Host, fact);
                let all: Vec<String> = earlier.into_iter().chain(labels.iter().cloned()).collect();
                facts::publish(&Host, fact, &all.join(","));
            }
        }
        let waited = Host.now_ms().saturating_sub(check.started_ms);
        let total = facts::read_u64(&Host, facts::GUARD_WAIT_MS).unwrap_or(0).saturating_add(waited);
        facts::publish(&Host, facts::GUARD_WAIT_MS, &total.to_string());
    }

    // --- prompts -------------------------------------------------------------------------

    /// Acts on the prompt check; `true`: the request goes on.
    fn finish_prompt(&mut self, check: Check) -> bool {
        self.report(&check);
        let verdict = &check.verdict;
        match verdict.action() {
            Act::Block => {
                let error = if verdict.only_unavailable() {
                    ApiError::unavailable(verdict.message()).with_code("guard_unavailable")
                } else {
                    ApiError::bad_request(verdict.message()).with_code("content_filter")
                };
                proxy::send_error(&error);
                false
            }
            Act::Redact => {
                let replaced = verdict.replacement.as_ref().and_then(|to| texts::replace(&self.body, &check.shown, to));
                let done = replaced.is_some_and(|new| proxy::replace_request_body(self.body.len(), &new));
                if !done {
                    // The text the guard wanted changed must not leave as it was.
                    proxy::send_error(
                        &ApiError::unavailable("The request could not be redacted.").with_code("guard_unavailable"),
                    );
                }
                self.body = Vec::new();
                done
            }
            _ => {
                self.body = Vec::new();
                true
            }
        }
    }

    // --- answers -------------------------------------------------------------------------

    /// An answer the guards cannot read: their failure policy decides. `true`: it passes.
    fn unreadable_answer(&mut self, why: &str) -> bool {
        let shared = Rc::clone(&self.shared);
        let mut check = Check::new(Direction::Answer, Vec::new(), Vec::new(), 0);
        for i in self.guards(Direction::Answer) {
            if let Some(guard) = shared.config.guards.get(i) {
                let result = check.verdict.add(guard, Err(Trouble::Garbage));
                self.count_check(&guard.name, Direction::Answer, result, 0);
            }
        }
        log::warn!("{NAME}: an answer the guards cannot read ({why}): {}", check.verdict.decision());
        self.report(&check);
        check.verdict.action() != Act::Block
    }

    /// Acts on a whole JSON answer's check.
    fn finish_json(&mut self, check: Check, size: usize) {
        self.report(&check);
        let body = std::mem::take(&mut self.body);
        let api = self.api.unwrap_or(Api::ChatCompletions);
        let new = match check.verdict.action() {
            Act::Block => Some(withhold(api, &body)),
            Act::Redact => {
                let replaced =
                    check.verdict.replacement.as_ref().and_then(|to| texts::replace(&body, &check.shown, to));
                // Text that was not found as one string cannot be redacted: withheld instead.
                Some(replaced.filter(|new| *new != body).unwrap_or_else(|| withhold(api, &body)))
            }
            _ => None,
        };
        if let Some(new) = new {
            if !proxy::replace_response_body(size, &new) {
                log::warn!("{NAME}: could not replace the answer");
            }
        }
    }

    /// A stream check came back.
    fn finish_stream(&mut self, check: Check) {
        self.report(&check);
        let passed = check.verdict.action() < Act::Redact;
        let Some(Reading::Stream { screen, .. }) = &mut self.answer else { return };
        let step = screen.settle(check.upto, passed);
        self.stream_step(step);
    }

    /// Sends what a stream step gave: now if the answer is paused at its end, else with the
    /// next chunk; and asks the next check.
    fn stream_step(&mut self, step: screen::Step) {
        let Some(Reading::Stream { screen, unsent, buffered }) = &mut self.answer else { return };
        unsent.push_str(&step.out);
        let mut resume = false;
        if let Some(at) = *buffered {
            if !unsent.is_empty() {
                if !proxy::append_response_body(at, unsent.as_bytes()) {
                    log::warn!("{NAME}: could not add to the answer");
                }
                *buffered = Some(at + unsent.len());
                unsent.clear();
            }
            resume = screen.is_closed();
        }
        if let Some(upto) = step.ask {
            let text = screen.text().get(..upto).unwrap_or_default().to_string();
            if !self.ask(Direction::Answer, Some(&text), upto) {
                if let Some(check) = self.check.take() {
                    return self.finish_stream(check);
                }
            }
        }
        if resume {
            proxy::resume_response();
        }
    }

    /// A whole JSON answer: asks its guards (the answer waits) or decides at once.
    fn check_json(&mut self, size: usize) -> Action {
        let api = self.api.unwrap_or(Api::ChatCompletions);
        let body = proxy::response_body(size).unwrap_or_default();
        let text = (body.len() <= self.shared.config.max_answer_bytes).then(|| texts::answer(api, &body)).flatten();
        let Some(text) = text else {
            if !self.unreadable_answer("unreadable JSON") && !proxy::replace_response_body(size, &withhold(api, &body))
            {
                log::warn!("{NAME}: could not withhold the answer");
            }
            return Action::Continue;
        };
        if text.trim().is_empty() {
            return Action::Continue;
        }
        self.body = body;
        if self.ask(Direction::Answer, Some(&text), 0) {
            return Action::Pause;
        }
        if let Some(check) = self.check.take() {
            // No guard could be asked: decided now.
            self.finish_json(check, size);
        }
        Action::Continue
    }

    /// One chunk of a streamed answer.
    fn check_chunk(&mut self, mut screen: Box<Screen>, unsent: String, size: usize, end: bool) -> Action {
        let chunk = proxy::response_body(size).unwrap_or_default();
        let mut step = screen.push(&chunk, end);
        if screen.text().len() > self.shared.config.max_answer_bytes || screen.overflowing() {
            // Too much text for the guards, or held too long: their failure policy decides.
            let open = self
                .guards(Direction::Answer)
                .iter()
                .filter_map(|&i| self.shared.config.guards.get(i))
                .all(|g| g.on_error == FailurePolicy::Open);
            step.out.push_str(&if open { screen.pass_unchecked() } else { screen.block() });
            raise_decision(if open { "unchecked" } else { "block" });
        }
        let mut out = unsent;
        out.push_str(&std::mem::take(&mut step.out));
        self.answer = Some(Reading::Stream { screen, unsent: String::new(), buffered: None });
        self.stream_step(step);
        let Some(Reading::Stream { screen, unsent, buffered }) = &mut self.answer else { return Action::Continue };
        out.push_str(&std::mem::take(unsent));
        if !proxy::replace_response_body(size, out.as_bytes()) {
            log::warn!("{NAME}: could not replace a stream chunk");
        }
        if screen.waiting() {
            // The end waits for the last check; its reply adds to what Envoy holds.
            *buffered = Some(out.len());
            return Action::Pause;
        }
        Action::Continue
    }
}

/// The answer withheld in its schema, or an error body where the schema has no such answer.
fn withhold(api: Api, body: &[u8]) -> Vec<u8> {
    texts::withheld(api, body, Host.now_ms() / 1000).unwrap_or_else(|| {
        ApiError::bad_gateway("The answer was withheld by a guard.").with_code("content_filter").body()
    })
}

impl plugin::Filter for Filter {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        if self.shared.config.guards.is_empty() {
            return Action::Continue;
        }
        let method = proxy::request_header_text(":method").unwrap_or_default();
        self.path = proxy::request_header_text(":path").unwrap_or_default();
        self.api = if method == "POST" && !end_of_stream { Api::from_path(&self.path) } else { None };
        if self.api.is_some() {
            // The body may change length (a redaction); answers are read as they come.
            proxy::remove_request_header("content-length");
            proxy::remove_request_header("accept-encoding");
        }
        Action::Continue
    }

    fn body_limit(&self) -> Option<usize> {
        (self.api.is_some() && self.plan.is_none()).then_some(self.shared.config.max_request_bytes)
    }

    /// A prompt the guards cannot read whole must not reach a provider.
    fn on_body_too_large(&mut self, limit: usize) -> Action {
        self.api = None;
        proxy::send_error(&ApiError::payload_too_large(format!(
            "The request body exceeds the {limit} bytes the guards check."
        )));
        Action::Pause
    }

    fn on_request_body(&mut self, body: Vec<u8>, _size: usize) -> Action {
        let Some(api) = self.api else { return Action::Continue };
        self.model = prompt::summarize(api, &self.path, &body).map(|s| s.model).unwrap_or_default();
        let plan = self.shared.config.plan(api, &self.model);
        let guarded = !plan.guards.is_empty();
        self.plan = Some(plan);
        if !guarded {
            return Action::Continue;
        }
        let Some(read) = texts::prompt(api, &body) else {
            self.api = None;
            proxy::send_error(
                &ApiError::bad_request("The request body is not a request the guards can read.")
                    .with_code("unreadable_request"),
            );
            return Action::Pause;
        };
        self.prompt = read.said;
        self.last_turn = read.last_turn;
        if self.prompt.is_empty() || self.guards(Direction::Prompt).is_empty() {
            return Action::Continue;
        }
        self.body = body;
        if self.ask(Direction::Prompt, None, 0) {
            return Action::Pause;
        }
        match self.check.take().map(|check| self.finish_prompt(check)) {
            Some(false) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_callout(&mut self, token: u32, response: &CalloutResponse) {
        let Some(check) = &mut self.check else { return };
        let Some(position) = check.waiting.iter().position(|(t, _)| *t == token) else { return };
        let (_, i) = check.waiting.remove(position);
        let shared = Rc::clone(&self.shared);
        let Some(guard) = shared.config.guards.get(i) else { return };
        let embedded = check.embedded.clone();
        let shown = if guard.kind == Kind::Similarity { embedded.len() } else { check.shown.len() };
        let reply = match service::read(guard, response, shown) {
            Ok(Reply::Vectors(vectors)) => self.score(i, guard, &embedded, &vectors),
            other => other,
        };
        let Some(check) = &mut self.check else { return };
        if let Err(trouble) = &reply {
            log::warn!(
                "{NAME}: guard `{}` did not answer the {} check: {trouble:?}",
                guard.name,
                check.direction.name()
            );
        }
        let result = check.verdict.add(guard, reply);
        let (direction, ms) = (check.direction, Host.now_ms().saturating_sub(check.started_ms));
        let done = check.waiting.is_empty();
        self.count_check(&guard.name, direction, result, ms);
        if !done {
            return;
        }
        let Some(check) = self.check.take() else { return };
        match (direction, &self.answer) {
            (Direction::Prompt, _) => {
                if self.finish_prompt(check) {
                    proxy::resume_request();
                }
            }
            (Direction::Answer, Some(Reading::Json { size })) => {
                let size = *size;
                self.finish_json(check, size);
                proxy::resume_response();
            }
            (Direction::Answer, _) => self.finish_stream(check),
        }
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        let Some(api) = self.api.filter(|a| texts::answers_have_text(*a)) else { return Action::Continue };
        if self.guards(Direction::Answer).is_empty() {
            return Action::Continue;
        }
        if proxy::response_status() != Some(200) {
            return Action::Continue;
        }
        let content_type = proxy::response_header_text("content-type").unwrap_or_default().to_ascii_lowercase();
        let encoded =
            proxy::response_header_text("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        let settings = self.plan.as_ref().map(|p| p.stream).unwrap_or(self.shared.config.stream);
        let screen = content_type.starts_with("text/event-stream").then(|| Screen::of(api, settings)).flatten();
        let reading = match screen {
            _ if encoded => None,
            Some(screen) => Some(Reading::Stream { screen: Box::new(screen), unsent: String::new(), buffered: None }),
            None if content_type.contains("json") => Some(Reading::Json { size: 0 }),
            None => None,
        };
        match reading {
            Some(reading) => {
                proxy::remove_response_header("content-length");
                self.answer = Some(reading);
                Action::Continue
            }
            None if self.unreadable_answer(if encoded { "encoded" } else { "content type" }) => Action::Continue,
            None => {
                proxy::send_error(
                    &ApiError::bad_gateway("The answer could not be checked by the guards.")
                        .with_code("content_filter"),
                );
                Action::Pause
            }
        }
    }

    /// An answer that ends in trailers ends here: a JSON answer (held whole) is checked now. A
    /// stream cannot get more data here: what it held back stays held (nothing unchecked
    /// leaves) and its end is lost.
    fn on_response_trailers(&mut self) -> Action {
        match self.answer.take() {
            Some(Reading::Json { size }) => {
                self.answer = Some(Reading::Json { size });
                self.check_json(size)
            }
            Some(Reading::Stream { screen, .. }) if !screen.is_closed() => {
                log::warn!("{NAME}: a streamed answer ended in trailers; its unchecked end was withheld");
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.answer.take() {
            None => Action::Continue,
            Some(Reading::Json { .. }) => {
                self.answer = Some(Reading::Json { size: body_size });
                if end_of_stream {
                    self.check_json(body_size)
                } else {
                    Action::Pause
                }
            }
            Some(Reading::Stream { screen, unsent, .. }) => self.check_chunk(screen, unsent, body_size, end_of_stream),
        }
    }
}
