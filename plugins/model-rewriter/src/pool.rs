//! Endpoint picking inside a self-hosted pool (vLLM, SGLang, NIM).
//!
//! - **Scraping**: each endpoint's Prometheus text is read every `scrape.interval_ms` by one
//!   worker (whichever claims it first in shared data) and kept in shared data with its age:
//!   requests waiting and running, KV-cache use, loaded LoRA adapters ([`Figures::parse`]).
//! - **Picking** ([`pick`]): among endpoints with fresh figures, first the ones with the
//!   requested LoRA adapter loaded whose queue is under twice `max_waiting` (a load elsewhere
//!   costs about that much); else those with headroom (waiting at most `max_waiting`, KV cache
//!   below `max_kv_cache`), for an adapter nobody has the ones with a free adapter slot; then,
//!   for a prompt with a long enough prefix, the same endpoint for the same prefix (rendezvous
//!   hashing, so its prefix cache hits), else the least loaded. Requests sent since the last scrape and still in
//!   flight count as load, so workers do not herd onto one endpoint between scrapes.
//! - **Telling Envoy**: the address is published (`sluice.route.endpoint`) and copied to
//!   `x-gateway-destination-endpoint`, which the pool cluster's override-host load-balancing
//!   policy reads. No fresh figures, or an unhealthy host: Envoy's fallback policy balances.

use serde::{Deserialize, Serialize};
use sluice_shared::digest;
use sluice_shared::host::SharedData;

use crate::config::{Engine, Pool};

/// An endpoint's address as Envoy names hosts (`ip:port`, IPv6 in brackets), checked.
pub fn address(text: &str) -> Option<std::net::SocketAddr> {
    text.parse().ok()
}

/// What an endpoint's metrics said, and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    pub waiting: f64,
    pub running: f64,
    /// KV-cache use, 0-1.
    pub kv_cache: f64,
    /// LoRA adapters loaded (running).
    pub adapters: Vec<String>,
    /// Adapter slots; 0: unknown.
    pub max_lora: u64,
}

impl Figures {
    /// Reads Prometheus text exposition; `None` when it holds none of the engine's queue and
    /// KV-cache figures (not this engine's metrics, or not metrics at all).
    pub fn parse(engine: Engine, text: &str) -> Option<Figures> {
        let names = match engine {
            Engine::Vllm => Names {
                waiting: &["vllm:num_requests_waiting"],
                running: &["vllm:num_requests_running"],
                kv_cache: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
                lora: Some("vllm:lora_requests_info"),
            },
            Engine::Sglang => Names {
                waiting: &["sglang:num_queue_reqs"],
                running: &["sglang:num_running_reqs"],
                kv_cache: &["sglang:token_usage"],
                lora: None,
            },
        };
        let mut figures = Figures::default();
        let (mut queue, mut cache) = (false, false);
        // The latest `lora_requests_info` sample (its value is a timestamp) wins.
        let mut lora_at = f64::MIN;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let Some(sample) = Sample::read(line) else { continue };
            let value = sample.value;
            if names.waiting.contains(&sample.name) {
                figures.waiting += value;
                queue = true;
            } else if names.running.contains(&sample.name) {
                figures.running += value;
            } else if names.kv_cache.contains(&sample.name) {
                figures.kv_cache = figures.kv_cache.max(value);
                cache = true;
            } else if names.lora == Some(sample.name) && value >= lora_at {
                lora_at = value;
                let running = sample.label("running_lora_adapters").unwrap_or_default();
                figures.adapters =
                    running.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
                figures.max_lora = sample.label("max_lora").and_then(|m| m.parse().ok()).unwrap_or(0);
            }
        }
        let sane = [figures.waiting, figures.running, figures.kv_cache].iter().all(|v| v.is_finite() && *v >= 0.0);
        (queue && cache && sane).then_some(figures)
    }
}

struct Names {
    waiting: &'static [&'static str],
    running: &'static [&'static str],
    kv_cache: &'static [&'static str],
    lora: Option<&'static str>,
}

/// One line of Prometheus text: `name{label="value",...} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

impl<'a> Sample<'a> {
    fn read(line: &'a str) -> Option<Sample<'a>> {
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}')?;
                (line.get(..open)?, line.get(open + 1..close)?, line.get(close + 1..)?)
            }
            None => {
                let space = line.find([' ', '\t'])?;
                (line.get(..space)?, "", line.get(space..)?)
            }
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some(Sample { name, labels, value })
    }

    /// A label's value (the exposition's escapes are not needed for adapter names).
    fn label(&self, key: &str) -> Option<&'a str> {
        let mut rest = self.labels;
        while !rest.is_empty() {
            let eq = rest.find('=')?;
            let name = rest.get(..eq)?.trim().trim_start_matches(',').trim();
            let after = rest.get(eq + 1..)?.trim_start().strip_prefix('"')?;
            let end = after.find('"')?;
            if name == key {
                return after.get(..end);
            }
            rest = after.get(end + 1..)?;
        }
        None
    }
}

/// An endpoint's shared record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// The last scrape's figures; `None` when it failed.
    pub figures: Option<Figures>,
    /// When the last scrape finished (ms); 0: never.
    pub scraped_ms: u64,
    /// When a worker last claimed the next scrape (ms).
    pub claimed_ms: u64,
    /// This gateway's requests in flight here (every worker's).
    pub in_flight: u64,
    /// [`Endpoint::in_flight`] when the figures were scraped (they count those already).
    pub at_scrape: u64,
}

impl Endpoint {
    /// Requests sent here since the scrape and still in flight: load the figures do not show yet.
    pub fn unseen(&self) -> u64 {
        self.in_flight.saturating_sub(self.at_scrape)
    }

    /// Figures no older than `stale_ms`.
    pub fn fresh(&self, now_ms: u64, stale_ms: u64) -> Option<&Figures> {
        let young = self.scraped_ms > 0 && now_ms.saturating_sub(self.scraped_ms) <= stale_ms;
        self.figures.as_ref().filter(|_| young)
    }

    /// Due for a scrape (nobody scraped or claimed it within the interval).
    pub fn due(&self, now_ms: u64, interval_ms: u64) -> bool {
        now_ms.saturating_sub(self.scraped_ms.max(self.claimed_ms)) >= interval_ms
    }
}

/// The shared-data key of a pool endpoint's record.
pub fn key(pool: &str, endpoint: &str) -> String {
    format!("sluice.pool.{pool}.{endpoint}")
}

pub fn read(host: &dyn SharedData, key: &str) -> Endpoint {
    host.get_shared(key).0.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// Applies `change` to a record, if `change` says so (`false`: leave it); `true` when this
/// worker's change was stored.
pub fn update(host: &dyn SharedData, key: &str, change: impl Fn(&mut Endpoint) -> bool) -> bool {
    sluice_shared::host::update_record(host, key, change)
}

/// Why an endpoint was picked (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The least loaded with headroom.
    Headroom,
    /// The endpoint of this prompt's prefix.
    Prefix,
    /// The least loaded of the endpoints that have the adapter loaded.
    Lora,
    /// None had headroom: the least loaded.
    Saturated,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Headroom => "headroom",
            Reason::Prefix => "prefix",
            Reason::Lora => "lora",
            Reason::Saturated => "saturated",
        }
    }
}

/// What one request asks of the pool.
#[derive(Debug, Clone, Default)]
pub struct Ask<'a> {
    /// The model the endpoint serves it as (a LoRA adapter's name, or the base model).
    pub model: &'a str,
    /// The prompt's beginning, for prefix affinity (`None`: shorter than `prefix_chars`).
    pub prefix: Option<&'a str>,
    pub roll: u64,
}

/// The endpoint to use, of `endpoints` (address, record); `None` when none has fresh figures.
pub fn pick<'e>(
    pool: &Pool,
    endpoints: &[(&'e str, Endpoint)],
    ask: &Ask<'_>,
    now_ms: u64,
) -> Option<(&'e str, Reason)> {
    let fresh: Vec<(&str, &Figures, u64)> = endpoints
        .iter()
        .filter_map(|(address, record)| Some((*address, record.fresh(now_ms, pool.scrape.stale_ms)?, record.unseen())))
        .collect();
    if fresh.is_empty() {
        return None;
    }
    let load = |(_, f, picked): &(&str, &Figures, u64)| f.waiting + f.running + *picked as f64;
    let queued = |f: &Figures, picked: u64| f.waiting + picked as f64;
    if pool.lora_affinity {
        // Loading an adapter elsewhere costs as much as a queue (and evicts another adapter
        // there), so an endpoint with it loaded keeps it while its queue is under twice
        // `max_waiting`.
        let holders: Vec<_> = fresh
            .iter()
            .copied()
            .filter(|(_, f, picked)| {
                f.adapters.iter().any(|a| a == ask.model)
                    && queued(f, *picked) <= 2.0 * pool.max_waiting as f64
                    && f.kv_cache < pool.max_kv_cache
            })
            .collect();
        if !holders.is_empty() {
            let chosen = match ask.prefix {
                Some(prefix) => rendezvous(&holders, prefix),
                None => least(&holders, ask.roll, load),
            };
            return chosen.map(|a| (a, Reason::Lora));
        }
    }
    let roomy: Vec<_> = fresh
        .iter()
        .copied()
        .filter(|(_, f, picked)| queued(f, *picked) <= pool.max_waiting as f64 && f.kv_cache < pool.max_kv_cache)
        .collect();
    if roomy.is_empty() {
        return least(&fresh, ask.roll, load).map(|a| (a, Reason::Saturated));
    }
    let mut candidates = roomy;
    if pool.lora_affinity && candidates.iter().any(|(_, f, _)| !f.adapters.is_empty()) {
        // An adapter nobody has room for: where a slot is free it loads without evicting one.
        let free: Vec<_> = candidates
            .iter()
            .copied()
            .filter(|(_, f, _)| f.max_lora == 0 || (f.adapters.len() as u64) < f.max_lora)
            .collect();
        if !free.is_empty() {
            candidates = free;
        }
    }
    if let Some(prefix) = ask.prefix {
        return rendezvous(&candidates, prefix).map(|a| (a, Reason::Prefix));
    }
    least(&candidates, ask.roll, load).map(|a| (a, Reason::Headroom))
}

/// Rendezvous hashing: the same prefix, the same endpoint while it is a candidate; when it is
/// not, the next in this prefix's order.
fn rendezvous<'e>(candidates: &[(&'e str, &Figures, u64)], prefix: &str) -> Option<&'e str> {
    candidates
        .iter()
        .max_by_key(|(address, _, _)| {
            let hash = digest::sha256(format!("{prefix}\n{address}").as_bytes());
            u64::from_le_bytes(hash.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
        })
        .map(|(address, _, _)| *address)
}

/// The endpoints a retry goes to, after `chosen`: the others with fresh figures, least loaded
/// first (Envoy's override-host policy tries them in order, one per retry).
pub fn failovers<'e>(pool: &Pool, endpoints: &[(&'e str, Endpoint)], chosen: &str, now_ms: u64) -> Vec<&'e str> {
    let mut others: Vec<(&str, (f64, f64))> = endpoints
        .iter()
        .filter(|(address, _)| *address != chosen)
        .filter_map(|(address, record)| {
            let f = record.fresh(now_ms, pool.scrape.stale_ms)?;
            Some((*address, (f.waiting + f.running + record.unseen() as f64, f.kv_cache)))
        })
        .collect();
    others.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    others.into_iter().map(|(address, _)| address).collect()
}

/// The least loaded (ties: lower KV cache, then the roll).
fn least<'e>(
    endpoints: &[(&'e str, &Figures, u64)],
    roll: u64,
    load: impl Fn(&(&'e str, &Figures, u64)) -> f64,
) -> Option<&'e str> {
    let score = |e: &(&'e str, &Figures, u64)| (load(e), e.1.kv_cache);
    let best = endpoints.iter().map(score).min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal))?;
    let ties: Vec<&str> = endpoints.iter().filter(|e| score(e) <= best).map(|e| e.0).collect();
    let count = u64::try_from(ties.len()).ok().filter(|n| *n > 0)?;
    ties.get(usize::try_from(roll % count).ok()?).copied()
}

/// The prompt's beginning used for prefix affinity: its first `chars` characters, when it
/// has that many.
pub fn prefix(text: &str, chars: usize) -> Option<&str> {
    if chars == 0 {
        return None;
    }
    let end = text.char_indices().nth(chars).map(|(i, _)| i)?;
    text.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scrape;
    use sluice_shared::host::fake::FakeHost;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.42
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql,chat",waiting_lora_adapters=""} 1.7e9
vllm:lora_requests_info{max_lora="2",running_lora_adapters="old",waiting_lora_adapters=""} 1.6e9
vllm:prompt_tokens_total{model_name="llama"} 12345
"#;

    #[test]
    fn reads_vllm_and_sglang_metrics() {
        let f = Figures::parse(Engine::Vllm, VLLM).unwrap();
        assert_eq!((f.waiting, f.running, f.kv_cache), (1.0, 3.0, 0.42));
        assert_eq!(f.adapters, ["sql", "chat"], "the latest adapter sample");
        assert_eq!(f.max_lora, 2);
        let older = "vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.5\n";
        assert_eq!(Figures::parse(Engine::Vllm, older).map(|f| f.kv_cache), Some(0.5));
        let sglang = "sglang:num_queue_reqs{model_name=\"m\"} 4\nsglang:num_running_reqs 2\nsglang:token_usage 0.7\n";
        let f = Figures::parse(Engine::Sglang, sglang).unwrap();
        assert_eq!((f.waiting, f.running, f.kv_cache), (4.0, 2.0, 0.7));
    }

    #[test]
    fn unreadable_metrics_are_none() {
        for bad in [
            "",
            "<html>oops</html>",
            "vllm:num_requests_waiting 1\n",
            "vllm:num_requests_waiting NaN\nvllm:kv_cache_usage_perc 0.1",
        ] {
            assert_eq!(Figures::parse(Engine::Vllm, bad), None, "{bad}");
        }
        assert_eq!(Figures::parse(Engine::Sglang, VLLM), None, "another engine's names");
        assert!(Figures::parse(Engine::Vllm, "vllm:num_requests_waiting -1\nvllm:kv_cache_usage_perc 0.1").is_none());
    }

    fn pool() -> Pool {
        Pool {
            endpoints: vec![],
            scrape: Scrape::default(),
            engine: Engine::Vllm,
            max_waiting: 2,
            max_kv_cache: 0.9,
            prefix_chars: 8,
            lora_affinity: true,
        }
    }

    fn at(waiting: f64, running: f64, kv: f64, adapters: &[&str]) -> Endpoint {
        Endpoint {
            figures: Some(Figures {
                waiting,
                running,
                kv_cache: kv,
                adapters: adapters.iter().map(|a| a.to_string()).collect(),
                max_lora: 2,
            }),
            scraped_ms: 1_000,
            claimed_ms: 0,
            in_flight: 0,
            at_scrape: 0,
        }
    }

    fn ask(model: &str) -> Ask<'_> {
        Ask { model, prefix: None, roll: 0 }
    }

    #[test]
    fn the_least_loaded_with_headroom() {
        let endpoints =
            [("a:1", at(0.0, 6.0, 0.3, &[])), ("b:1", at(1.0, 2.0, 0.3, &[])), ("c:1", at(0.0, 1.0, 0.95, &[]))];
        assert_eq!(pick(&pool(), &endpoints, &ask("m"), 1_500), Some(("b:1", Reason::Headroom)), "c's cache is full");
        // Requests picked since the scrape count.
        let mut busy = endpoints.clone();
        busy[1].1.in_flight = 5;
        assert_eq!(pick(&pool(), &busy, &ask("m"), 1_500), Some(("a:1", Reason::Headroom)));
        // Nobody has headroom: the least loaded anyway.
        let full = [("a:1", at(5.0, 6.0, 0.3, &[])), ("b:1", at(3.0, 6.0, 0.99, &[]))];
        assert_eq!(pick(&pool(), &full, &ask("m"), 1_500), Some(("b:1", Reason::Saturated)));
    }

    #[test]
    fn retries_go_to_the_next_least_loaded() {
        let endpoints = [
            ("a:1", at(0.0, 6.0, 0.3, &[])),
            ("b:1", at(1.0, 2.0, 0.3, &[])),
            ("c:1", at(0.0, 1.0, 0.95, &[])),
            ("d:1", Endpoint::default()),
        ];
        assert_eq!(failovers(&pool(), &endpoints, "b:1", 1_500), ["c:1", "a:1"], "fresh ones only, by load");
    }

    #[test]
    fn stale_figures_leave_it_to_envoy() {
        let endpoints = [("a:1", at(0.0, 0.0, 0.0, &[])), ("b:1", Endpoint::default())];
        assert_eq!(pick(&pool(), &endpoints, &ask("m"), 1_000 + 2_000).map(|p| p.0), Some("a:1"));
        assert_eq!(pick(&pool(), &endpoints, &ask("m"), 1_000 + 2_001), None);
        let failed = [("a:1", Endpoint { figures: None, scraped_ms: 1_000, ..Endpoint::default() })];
        assert_eq!(pick(&pool(), &failed, &ask("m"), 1_100), None);
    }

    #[test]
    fn lora_affinity_then_free_slots() {
        let endpoints = [
            ("a:1", at(0.0, 0.0, 0.1, &["x", "y"])),
            ("b:1", at(0.0, 4.0, 0.1, &["sql"])),
            ("c:1", at(0.0, 2.0, 0.1, &["z"])),
        ];
        assert_eq!(pick(&pool(), &endpoints, &ask("sql"), 1_500), Some(("b:1", Reason::Lora)));
        // Nobody has `new`: a (least loaded) has no free slot; c has one.
        assert_eq!(pick(&pool(), &endpoints, &ask("new"), 1_500), Some(("c:1", Reason::Headroom)));
        let off = Pool { lora_affinity: false, ..pool() };
        assert_eq!(pick(&off, &endpoints, &ask("sql"), 1_500), Some(("a:1", Reason::Headroom)));
        // The holder keeps its adapter's requests past `max_waiting` (2), up to twice that.
        let queued = |waiting| [("a:1", at(0.0, 0.0, 0.1, &[])), ("b:1", at(waiting, 4.0, 0.1, &["sql"]))];
        assert_eq!(pick(&pool(), &queued(4.0), &ask("sql"), 1_500), Some(("b:1", Reason::Lora)));
        assert_eq!(pick(&pool(), &queued(5.0), &ask("sql"), 1_500), Some(("a:1", Reason::Headroom)));
        let with_prefix = Ask { model: "sql", prefix: Some("system: you are a helpful"), roll: 0 };
        assert_eq!(pick(&pool(), &queued(1.0), &with_prefix, 1_500), Some(("b:1", Reason::Lora)), "before the prefix");
    }

    #[test]
    fn a_prefix_keeps_its_endpoint_while_it_has_headroom() {
        let endpoints =
            [("a:1", at(0.0, 1.0, 0.1, &[])), ("b:1", at(0.0, 1.0, 0.1, &[])), ("c:1", at(0.0, 1.0, 0.1, &[]))];
        let with = |prefix: &'static str, roll| Ask { model: "m", prefix: Some(prefix), roll };
        let first = pick(&pool(), &endpoints, &with("system: you are a helpful", 0), 1_500).unwrap();
        assert_eq!(first.1, Reason::Prefix);
        for roll in 1..20 {
            assert_eq!(pick(&pool(), &endpoints, &with("system: you are a helpful", roll), 1_500), Some(first));
        }
        // Different prefixes spread.
        let spread: std::collections::HashSet<&str> = (0..40)
            .map(|i| {
                let text: &'static str = Box::leak(format!("prefix number {i}").into_boxed_str());
                pick(&pool(), &endpoints, &with(text, 0), 1_500).unwrap().0
            })
            .collect();
        assert_eq!(spread.len(), 3);
        // Its endpoint loses headroom: the prefix moves, to one other endpoint.
        let mut busy = endpoints.clone();
        if let Some(e) = busy.iter_mut().find(|e| e.0 == first.0) {
            e.1.in_flight = 3;
        }
        let moved = pick(&pool(), &busy, &with("system: you are a helpful", 0), 1_500).unwrap();
        assert_ne!(moved.0, first.0);
        assert_eq!(pick(&pool(), &busy, &with("system: you are a helpful", 7), 1_500), Some(moved));
    }

    #[test]
    fn prefixes_are_whole_characters() {
        assert_eq!(prefix("héllo world", 5), Some("héllo"));
        assert_eq!(prefix("short", 8), None);
        assert_eq!(prefix("anything", 0), None);
    }

    #[test]
    fn records_are_claimed_once_and_age() {
        let host = FakeHost::default();
        let k = key("p", "10.0.0.1:8000");
        let claim = |now| {
            update(&host, &k, |r| {
                r.due(now, 200) && {
                    r.claimed_ms = now;
                    true
                }
            })
        };
        assert!(claim(1_000));
        assert!(!claim(1_100), "claimed by another worker within the interval");
        assert!(update(&host, &k, |r| {
            r.figures = Some(Figures::default());
            r.scraped_ms = 1_150;
            true
        }));
        assert!(!claim(1_300) && claim(1_400));
        assert!(read(&host, &k).fresh(3_000, 2_000).is_some() && read(&host, &k).fresh(3_200, 2_000).is_none());
        let mut r = Endpoint { in_flight: 3, at_scrape: 1, ..Endpoint::default() };
        assert_eq!(r.unseen(), 2);
        r.in_flight = 0;
        assert_eq!(r.unseen(), 0, "requests the scrape saw ended");
        assert!(address("10.0.0.1:8000").is_some() && address("[::1]:80").is_some());
        assert!(address("pool.local:80").is_none() && address("10.0.0.1").is_none());
    }
}
