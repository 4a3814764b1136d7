//! Scrub throughput: MB/s of prompt text through `Scrubber::scrub` with every built-in detector
//! on, for clean prose and for prose holding an email, a phone number and an IP address about
//! every 330 bytes.
//!
//! Natively: `cargo run --release -p sluice-pii-scrubber --example scrub_throughput`.
//! Inside the module's engine (V8), as `make bench` does: built for wasm32-wasip1 and run under
//! Node's WASI (`tests/harness/run_wasi.mjs`).

use std::time::Instant;

use sluice_pii_scrubber::config::Config;
use sluice_pii_scrubber::scrub::{Scrubber, Tally, Vault};

fn measure(scrubber: &Scrubber, name: &str, text: &str) {
    let mut rounds = 0u32;
    let mut found = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 2.0 {
        let mut tally = Tally::default();
        let _ = scrubber.scrub(text, &mut Vault::default(), &mut tally);
        found = tally.counts.values().sum();
        rounds += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let mb = text.len() as f64 * f64::from(rounds) / 1e6;
    println!("{name}: {:.1} MB/s ({} KB text, {found} findings, {rounds} rounds)", mb / seconds, text.len() / 1000);
}

fn main() {
    let scrubber = match Scrubber::new(&Config::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let prose = "The committee reviewed the quarterly report and asked for the revised figures by Friday. ";
    let pii = "Please reach the account owner at jane.doe@example.com or +44 20 7946 0958; the service \
               runs on 10.20.30.40 behind the usual proxy. ";
    let clean: String = prose.repeat(12_000);
    let mixed: String = format!("{prose}{prose}{pii}").repeat(3_000);
    measure(&scrubber, "clean prose", &clean);
    measure(&scrubber, "prose with PII", &mixed);
}
