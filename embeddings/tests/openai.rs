//! `OpenAiEmbeddings` against a scripted HTTP server on the loopback: batching,
//! ordering by index, retries on 429/5xx, clear errors on 4xx, dimension checks.
//! (This tests the client's control flow; the real model behind the same wire
//! format is `kb serve`.)

#![cfg(feature = "remote")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kb_core::Embedder;
use kb_embeddings::{Error, OpenAiEmbeddings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers to the n-th request: (status, body).
type Script = Arc<dyn Fn(usize, &Value) -> (u16, Value) + Send + Sync>;

/// Serves `script` on a loopback port; returns the base URL and the requests seen.
async fn serve(script: Script) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = socket.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break buf[end + 4..end + 4 + length].to_vec();
                    }
                }
            };
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let n = {
                let mut log = log.lock().expect("lock");
                log.push(request.clone());
                log.len() - 1
            };
            let (status, answer) = script(n, &request);
            let answer = answer.to_string();
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, seen)
}

/// Embeds each input as [length, index-in-batch, 1], in reverse order with indices.
fn echo(request: &Value) -> Value {
    let inputs = request["input"].as_array().cloned().unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| json!({"index": i, "embedding": [text.as_str().unwrap_or("").len() as f32, i as f32, 1.0]}))
        .collect();
    json!({"data": data, "model": request["model"]})
}

#[tokio::test]
async fn batches_keep_order_and_learn_the_dimension() {
    let (url, seen) = serve(Arc::new(|_, request| (200, echo(request)))).await;
    let embedder = OpenAiEmbeddings::builder(&url, "test-model")
        .batch_size(2)
        .api_key(Some("secret".into()))
        .build()
        .await
        .expect("build");
    assert_eq!(embedder.dimension(), 3);
    let vectors = embedder
        .embed_documents(&["a", "bb", "ccc", "dddd", "eeeee"])
        .await
        .expect("embed");
    let lengths: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
    assert_eq!(lengths, [1.0, 2.0, 3.0, 4.0, 5.0]);
    let seen = seen.lock().expect("lock");
    // One probe, then three batches of at most two.
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1]["input"], json!(["a", "bb"]));
    assert_eq!(seen[3]["input"], json!(["eeeee"]));
    assert_eq!(seen[1]["model"], "test-model");
}

#[tokio::test]
async fn retries_rate_limits_and_server_errors() {
    let (url, seen) = serve(Arc::new(|n, request| match n {
        0 => (429, json!({"error": {"message": "slow down"}})),
        1 => (503, json!({"error": {"message": "warming up"}})),
        _ => (200, echo(request)),
    }))
    .await;
    let embedder = OpenAiEmbeddings::builder(&url, "m")
        .dimension(3)
        .build()
        .await
        .expect("build");
    let vectors = embedder
        .embed_documents(&["x"])
        .await
        .expect("embed after retries");
    assert_eq!(vectors.len(), 1);
    assert_eq!(seen.lock().expect("lock").len(), 3);

    let (url, _) = serve(Arc::new(|_, _| {
        (500, json!({"error": {"message": "broken"}}))
    }))
    .await;
    let embedder = OpenAiEmbeddings::builder(&url, "m")
        .dimension(3)
        .max_retries(1)
        .build()
        .await
        .expect("build");
    let err = embedder.embed(&["x"]).await.unwrap_err();
    assert!(
        err.to_string().contains("500") && err.to_string().contains("broken"),
        "{err}"
    );
}

#[tokio::test]
async fn client_errors_fail_at_once_with_the_servers_message() {
    let (url, seen) = serve(Arc::new(|_, _| {
        (401, json!({"error": {"message": "invalid api key"}}))
    }))
    .await;
    let err = OpenAiEmbeddings::builder(&url, "m")
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid api key"), "{err}");
    assert_eq!(seen.lock().expect("lock").len(), 1, "4xx is not retried");
}

#[tokio::test]
async fn wrong_dimensions_and_counts_are_errors() {
    let (url, _) = serve(Arc::new(|_, request| (200, echo(request)))).await;
    let embedder = OpenAiEmbeddings::builder(&url, "m")
        .dimension(384)
        .build()
        .await
        .expect("build");
    let err = embedder.embed(&["x"]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                expected: 384,
                got: 3
            }
        ),
        "{err}"
    );

    let (url, _) = serve(Arc::new(|_, _| (200, json!({"data": []})))).await;
    let embedder = OpenAiEmbeddings::builder(&url, "m")
        .dimension(3)
        .build()
        .await
        .expect("build");
    let err = embedder.embed(&["x"]).await.unwrap_err();
    assert!(
        err.to_string().contains("0 embeddings for 1 inputs"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = OpenAiEmbeddings::builder(format!("http://127.0.0.1:{port}/v1"), "m")
        .max_retries(1)
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
}
