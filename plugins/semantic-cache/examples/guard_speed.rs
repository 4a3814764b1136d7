//! The paraphrase guard's cost: microseconds per comparison of a new prompt with a cached one
//! (both read, then compared, as a lookup does), over the 1,000 labelled pairs.
//!
//! Natively: `cargo run --release -p sluice-semantic-cache --example guard_speed`.
//! Inside the module's engine (V8), as `make bench` does: built for wasm32-wasip1 and run under
//! Node's WASI (`tests/harness/run_wasi.mjs`).

use std::time::Instant;

use sluice_semantic_cache::same_question::judge;

fn main() {
    let groups: serde_json::Value =
        serde_json::from_str(include_str!("../../../tests/data/semantic_pairs.json")).unwrap_or_default();
    let mut pairs = Vec::new();
    for group in groups.as_array().into_iter().flatten() {
        let question = group["question"].as_str().unwrap_or_default().to_string();
        let others = group["paraphrases"].as_array().into_iter().flatten().filter_map(|p| p.as_str());
        let misses = group["near_misses"].as_array().into_iter().flatten().filter_map(|m| m["text"].as_str());
        pairs.extend(others.chain(misses).map(|text| (question.clone(), text.to_string())));
    }
    let (mut rounds, mut same) = (0u32, 0usize);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 2.0 {
        same = pairs.iter().filter(|(a, b)| judge(a, b) == sluice_semantic_cache::same_question::Verdict::Same).count();
        rounds += 1;
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / (f64::from(rounds) * pairs.len() as f64);
    println!("guard: {micros:.1} us per comparison ({} pairs, {same} judged the same, {rounds} rounds)", pairs.len());
}
