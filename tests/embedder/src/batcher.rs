//! One model thread. Requests that arrive while it is busy wait in the queue and go through
//! together in the next forward pass, so concurrent callers share the cost of a batch.
//!
//! With `memo` set, texts seen before are answered from memory (the benchmarks use it to measure
//! the semantic cache without the model's time; production embedding servers do not do this).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;

use crate::model::{Embedding, MiniLm};

pub struct Job {
    pub texts: Vec<String>,
    pub reply: Sender<Result<Vec<Embedding>, String>>,
}

/// Starts the model thread; at most `max_batch` texts go through one pass (one request's own
/// texts are never split); up to `memo` texts are remembered (0: none).
pub fn spawn(model: MiniLm, max_batch: usize, memo: usize) -> Sender<Job> {
    let (queue, jobs) = channel::<Job>();
    thread::spawn(move || run(&model, &jobs, max_batch, memo));
    queue
}

fn run(model: &MiniLm, jobs: &Receiver<Job>, max_batch: usize, memo: usize) {
    let mut remembered: HashMap<String, Embedding> = HashMap::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut count = batch.iter().map(|j| j.texts.len()).sum::<usize>();
        while count < max_batch {
            match jobs.try_recv() {
                Ok(job) => {
                    count += job.texts.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<String> = batch.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let unknown: Vec<String> = texts.iter().filter(|t| !remembered.contains_key(*t)).cloned().collect();
        match model.embed(&unknown) {
            Ok(fresh) => {
                let mut fresh: HashMap<String, Embedding> = unknown.into_iter().zip(fresh).collect();
                for job in batch {
                    let own: Option<Vec<Embedding>> =
                        job.texts.iter().map(|t| fresh.get(t).or_else(|| remembered.get(t)).cloned()).collect();
                    let _ = job.reply.send(own.ok_or_else(|| "a text went missing from its batch".to_string()));
                }
                if memo > 0 {
                    if remembered.len() + fresh.len() > memo {
                        remembered.clear();
                    }
                    remembered.extend(fresh.drain().take(memo));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
