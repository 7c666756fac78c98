//! `OpenAiChat` against a scripted HTTP server on the loopback: plain and SSE
//! answers, streamed tool calls, retries on 429/5xx, clear errors on 4xx and
//! on an unreachable server. (This tests the client's control flow; the real
//! model behind the same wire format is `kb serve`.)

#![cfg(feature = "remote")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kb_core::{ChatEvent, ChatModel, FinishReason, GenerateOptions, Message};
use kb_llm::OpenAiChat;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The n-th answer: (status, content type, body).
type Script = Arc<dyn Fn(usize, &Value) -> (u16, &'static str, String) + Send + Sync>;

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
            let (status, content_type, answer) = script(n, &request);
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, seen)
}

fn sse(events: &[Value]) -> String {
    let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

fn client(url: &str) -> OpenAiChat {
    OpenAiChat::builder(url, "test-model")
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test]
async fn chat_sends_the_options_and_reads_the_answer() {
    let (url, seen) = serve(Arc::new(|_, _| {
        let body = json!({
            "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2},
        });
        (200, "application/json", body.to_string())
    }))
    .await;
    let options = GenerateOptions::default()
        .max_tokens(8)
        .top_k(5)
        .stop("\n")
        .seed(3)
        .tools(vec![kb_core::ToolSpec {
            name: "search".into(),
            description: "Searches.".into(),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        }]);
    let answer = client(&url)
        .chat(
            &[
                Message::system("Be brief."),
                Message::user("Capital of France?"),
            ],
            &options,
        )
        .await
        .expect("chat");
    assert_eq!(answer.message.content, "Paris.");
    assert_eq!(answer.usage.prompt_tokens, 12);
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let request = seen.lock().expect("lock")[0].clone();
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(request["max_tokens"], 8);
    assert_eq!(request["top_k"], 5);
    assert_eq!(request["stop"], json!(["\n"]));
    assert_eq!(request["stream"], false);
    assert!(request.get("min_p").is_none(), "unset options are not sent");
    assert_eq!(request["tools"][0]["type"], "function");
    assert_eq!(request["tools"][0]["function"]["name"], "search");
    assert_eq!(
        request["tools"][0]["function"]["parameters"]["properties"]["q"]["type"],
        "string"
    );
}

#[tokio::test]
async fn streams_tokens_tool_calls_and_usage() {
    let (url, _) = serve(Arc::new(|_, _| {
        let events = [
            json!({"choices": [{"delta": {"content": "Hel"}}]}),
            json!({"choices": [{"delta": {"content": "lo"}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "search", "arguments": "{\"q\":"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"kv\"}"}}]}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}),
        ];
        (200, "text/event-stream", sse(&events))
    }))
    .await;
    let mut stream = client(&url)
        .stream(&[Message::user("hi")], &GenerateOptions::default())
        .await
        .expect("stream");
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.expect("event"));
    }
    assert_eq!(events[0], ChatEvent::Token("Hel".into()));
    assert_eq!(events[1], ChatEvent::Token("lo".into()));
    let ChatEvent::ToolCall(call) = &events[2] else {
        panic!("{events:?}");
    };
    assert_eq!(call.name, "search");
    assert_eq!(call.arguments, json!({"q": "kv"}));
    let ChatEvent::Done { usage, finish, .. } = &events[3] else {
        panic!("{events:?}");
    };
    assert_eq!(*finish, FinishReason::ToolCalls);
    assert_eq!(usage.completion_tokens, 4);
}

#[tokio::test]
async fn retries_429_and_5xx_then_succeeds() {
    let (url, seen) = serve(Arc::new(|n, _| match n {
        0 => (
            429,
            "application/json",
            json!({"error": {"message": "slow down"}}).to_string(),
        ),
        1 => (503, "application/json", "{}".into()),
        _ => {
            let body =
                json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]});
            (200, "application/json", body.to_string())
        }
    }))
    .await;
    let answer = client(&url)
        .chat(&[Message::user("hi")], &GenerateOptions::default())
        .await
        .expect("chat after retries");
    assert_eq!(answer.message.content, "ok");
    assert_eq!(seen.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_quote_the_server() {
    let (url, seen) = serve(Arc::new(|_, _| {
        (
            400,
            "application/json",
            json!({"error": {"message": "model not found"}}).to_string(),
        )
    }))
    .await;
    let err = client(&url)
        .chat(&[Message::user("hi")], &GenerateOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("model not found"), "{err}");
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // A port that was just free: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    drop(listener);
    let client = OpenAiChat::builder(url, "m")
        .max_retries(1)
        .build()
        .expect("client");
    let err = client
        .chat(&[Message::user("hi")], &GenerateOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
}
