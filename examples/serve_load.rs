//! A bounded load test of a running `kb serve`, loopback only: many clients
//! searching the knowledge base at once, and a few chatting, for a fixed
//! time. Prints throughput, p50/p99 latency and the errors, counting the
//! server's deliberate 503 "busy" answers apart.
//!
//! ```text
//! kb serve &                                   # with a knowledge base
//! cargo run --release --example serve_load -- --url http://127.0.0.1:8080 --clients 64 --chat-clients 4 --seconds 60
//! ```

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

const USAGE: &str =
    "serve_load [--url URL] [--clients N] [--chat-clients N] [--seconds S] [--key KEY]

Loads a kb serve on this machine: N clients POST /v1/kb/search in a loop and
the chat clients POST /v1/chat/completions (16 tokens), for S seconds.";

/// What one route saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    busy: usize,
    errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.busy += other.busy;
        self.errors.extend(other.errors);
    }

    fn report(mut self, route: &str, seconds: f64) {
        self.latencies.sort();
        let at = |q: f64| {
            self.latencies
                .get(
                    ((self.latencies.len() as f64 * q) as usize)
                        .min(self.latencies.len().saturating_sub(1)),
                )
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{route}: {} ok ({:.1}/s), p50 {:.1} ms, p99 {:.1} ms, {} busy (503, deliberate), {} errors",
            self.latencies.len(),
            self.latencies.len() as f64 / seconds,
            at(0.5),
            at(0.99),
            self.busy,
            self.errors.len()
        );
        for error in self.errors.iter().take(5) {
            println!("  error: {error}");
        }
    }
}

async fn client(
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    body: serde_json::Value,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut request = http.post(&url).json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(_) => tally.latencies.push(started.elapsed()),
                Err(e) => tally.errors.push(e.to_string()),
            },
            Ok(response) if response.status().as_u16() == 503 => {
                tally.busy += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(response) => tally.errors.push(format!("status {}", response.status())),
            Err(e) => tally.errors.push(e.to_string()),
        }
    }
    tally
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = common::Args::parse(USAGE, &[])?;
    let url: String = args.get("url", "http://127.0.0.1:8080".to_string())?;
    let host = url
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!(
            "serve_load only loads a server on this machine (127.0.0.1 or localhost), not {host}"
        );
    }
    let clients: usize = args.get("clients", 64)?;
    let chat_clients: usize = args.get("chat-clients", 4)?;
    let seconds: u64 = args.get("seconds", 60)?;
    if clients + chat_clients > 512 || seconds > 600 {
        bail!("at most 512 clients and 600 seconds");
    }
    let key = std::env::var("KB_API_KEY").ok().or(args
        .get("key", String::new())
        .ok()
        .filter(|k| !k.is_empty()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let queries = [
        "how are models verified",
        "what does kb ingest do",
        "hybrid search",
        "什么是注意力机制",
    ];
    let mut searches = Vec::new();
    for i in 0..clients {
        let body = json!({"query": queries[i % queries.len()], "k": 5});
        searches.push(tokio::spawn(client(
            http.clone(),
            format!("{url}/v1/kb/search"),
            key.clone(),
            body,
            stop.clone(),
        )));
    }
    let mut chats = Vec::new();
    for _ in 0..chat_clients {
        let body =
            json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16});
        chats.push(tokio::spawn(client(
            http.clone(),
            format!("{url}/v1/chat/completions"),
            key.clone(),
            body,
            stop.clone(),
        )));
    }
    println!(
        "{clients} search clients and {chat_clients} chat clients against {url} for {seconds} s"
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut search = Tally::default();
    for task in searches {
        search.merge(task.await?);
    }
    let mut chat = Tally::default();
    for task in chats {
        chat.merge(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    search.report("/v1/kb/search", elapsed);
    chat.report("/v1/chat/completions", elapsed);
    Ok(())
}
