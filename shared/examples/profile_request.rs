//! Times the request-side work on an ~8k-token chat body (native; run with --release).
use std::time::Instant;

use sluice_shared::api::Api;
use sluice_shared::prompt::{estimate_prompt, summarize};

fn main() {
    let prompt =
        "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report. ".repeat(420);
    let body =
        serde_json::to_vec(&serde_json::json!({"messages": [{"role": "user", "content": prompt}], "model": "gpt-4o"}))
            .unwrap_or_default();
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(summarize(&body).ok());
    }
    println!("summarize: {:.1} us per {} byte body", start.elapsed().as_secs_f64() * 1e6 / rounds as f64, body.len());
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).ok());
    }
    println!("serde skip only: {:.1} us", start.elapsed().as_secs_f64() * 1e6 / rounds as f64);
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(estimate_prompt(Api::ChatCompletions, &body, 256 * 1024).ok());
    }
    println!("estimate_prompt: {:.1} us", start.elapsed().as_secs_f64() * 1e6 / rounds as f64);
}
