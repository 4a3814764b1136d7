//! One model thread. Requests that arrive while it is busy wait in the queue and go through
//! together in the next forward pass, so concurrent callers share the cost of a batch.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;

use crate::model::{Embedding, MiniLm};

pub struct Job {
    pub texts: Vec<String>,
    pub reply: Sender<Result<Vec<Embedding>, String>>,
}

/// Starts the model thread; at most `max_batch` texts go through one pass (one request's own
/// texts are never split).
pub fn spawn(model: MiniLm, max_batch: usize) -> Sender<Job> {
    let (queue, jobs) = channel::<Job>();
    thread::spawn(move || run(&model, &jobs, max_batch));
    queue
}

fn run(model: &MiniLm, jobs: &Receiver<Job>, max_batch: usize) {
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
        match model.embed(&texts) {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                for job in batch {
                    let own: Vec<Embedding> = embeddings.by_ref().take(job.texts.len()).collect();
                    let _ = job.reply.send(Ok(own));
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
