//! `kb serve` as clients use it: kb's own remote chat model and embedder
//! against it (a closed loop over the real local models), the OpenAI wire
//! format, SSE framing, auth, body limits, malformed requests, metrics and
//! a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kb_core::{ChatEvent, ChatModel, Embedder, GenerateOptions, Message};
use serde_json::{Value, json};

const KEY: &str = "s3cret-key";

/// A running `kb serve`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(kb_dir: &Path) -> Server {
    start_with(kb_dir, &[])
}

fn start_with(kb_dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(["--kb", kb_dir.to_str().expect("utf-8")])
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-body",
            "4096",
            "--threads",
            "2",
        ])
        .args(extra)
        .env("KB_API_KEY", KEY)
        .env_remove("KB_LLM")
        .env_remove("KB_EMBEDDER")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kb serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, String) {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn error_of(body: &str) -> Value {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(value["error"]["message"].is_string(), "{value}");
    value["error"].clone()
}

#[test]
fn serves_the_openai_api_to_kbs_own_clients() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work.path().join("no-kb-here"));
    let base = format!("{}/v1", server.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let get = |path: &str, key: Option<&'static str>| {
            send(&http, reqwest::Method::GET, format!("{}{path}", server.url), key, None)
        };
        let post = |path: &str, body: String| {
            send(&http, reqwest::Method::POST, format!("{}{path}", server.url), Some(KEY), Some(body))
        };

        // Auth: everything but /healthz needs the key.
        assert_eq!(get("/healthz", None).await.0, 200);
        let (status, body) = get("/v1/models", None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(error_of(&body)["code"], "invalid_api_key");
        assert_eq!(get("/v1/models", Some("s3cret-kez")).await.0, 401);
        let (status, body) = get("/v1/models", Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        let models: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");

        // kb's own OpenAI-compatible chat client, whole and streamed.
        let chat = kb_llm::OpenAiChat::builder(&base, "smollm2-135m-instruct")
            .api_key(Some(KEY.into()))
            .build()
            .expect("client");
        let messages = [Message::user("What is the capital of France?")];
        let options = GenerateOptions::default().max_tokens(12);
        let answer = chat.chat(&messages, &options).await.expect("chat");
        assert!(!answer.message.content.trim().is_empty());
        assert!(answer.usage.prompt_tokens > 5 && answer.usage.completion_tokens > 0);
        let mut stream = chat.stream(&messages, &options).await.expect("stream");
        let (mut text, mut done) = (String::new(), None);
        while let Some(event) = stream.next().await {
            match event.expect("event") {
                ChatEvent::Token(t) => text.push_str(&t),
                ChatEvent::Done { usage, .. } => done = Some(usage),
                ChatEvent::ToolCall(_) => {}
            }
        }
        assert_eq!(text, answer.message.content, "greedy: streamed = whole");
        assert_eq!(done.expect("done").completion_tokens, answer.usage.completion_tokens);

        // The SSE framing itself.
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let data: Vec<&str> = body
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("bad event {e:?}")))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        for chunk in &data[..data.len() - 1] {
            let chunk: Value = serde_json::from_str(chunk).expect("chunk JSON");
            assert_eq!(chunk["object"], "chat.completion.chunk");
        }

        // Embeddings through kb's remote embedder.
        let embedder = kb_embeddings::OpenAiEmbeddings::builder(&base, "multilingual-e5-small")
            .api_key(Some(KEY.into()))
            .build()
            .await
            .expect("embeddings client");
        let vectors = embedder
            .embed_documents(&["The cat sits on the mat.", "猫坐在垫子上。"])
            .await
            .expect("embed");
        assert_eq!(vectors.len(), 2);
        assert_eq!(vectors[0].len(), 384);
        let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");

        // Bad requests: clear JSON errors with the right statuses.
        let (status, body) = post("/v1/chat/completions", "{not json".into()).await;
        assert_eq!(status, 400, "{body}");
        assert!(error_of(&body)["message"].as_str().is_some_and(|m| !m.is_empty()));
        let (status, body) = post("/v1/chat/completions", json!({"messages": []}).to_string()).await;
        assert_eq!((status, error_of(&body)["param"].clone()), (400, json!("messages")));
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )
        .await;
        assert_eq!((status, error_of(&body)["code"].clone()), (404, json!("model_not_found")));
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string(),
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert!(error_of(&body)["message"].as_str().is_some_and(|m| m.contains("--max-body")));
        let (status, body) = post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": -1}).to_string(),
        )
        .await;
        assert!(status == 400 && body.contains("temperature"), "{status} {body}");
        let (status, body) = get("/v1/nothing", Some(KEY)).await;
        assert_eq!(status, 404, "{body}");
        error_of(&body);

        let (status, body) = post("/v1/kb/search", json!({"query": "models"}).to_string()).await;
        assert_eq!(status, 404, "no knowledge base: {body}");
        assert!(error_of(&body)["message"].as_str().is_some_and(|m| m.contains("kb ingest")));

        let (status, body) = get("/metrics", Some(KEY)).await;
        assert_eq!(status, 200);
        assert!(body.contains("kb_requests_total ") && body.contains("kb_tokens_generated_total "), "{body}");
    });

    // SIGTERM: a graceful stop.
    let mut server = server;
    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "kb serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn answers_from_the_knowledge_base_with_sources() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_dir = work.path().join("kb");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let ingest = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args([
            "--kb",
            kb_dir.to_str().expect("utf-8"),
            "ingest",
            docs.to_str().expect("utf-8"),
        ])
        .env_remove("KB_EMBEDDER")
        .output()
        .expect("ingest");
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    let server = start(&kb_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            send(
                &http,
                reqwest::Method::POST,
                format!("{}{path}", server.url),
                Some(KEY),
                Some(body.to_string()),
            )
        };

        let (status, body) = post(
            "/v1/kb/search",
            json!({"query": "How are downloaded models verified?", "k": 3}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let found: Value = serde_json::from_str(&body).expect("json");
        let results = found["results"].as_array().expect("results");
        assert_eq!(results.len(), 3);
        assert!(
            results[0]["chunk"]["text"].is_string() && results[0]["score"].is_number(),
            "{body}"
        );
        let (status, body) = post("/v1/kb/search", json!({"query": "x", "k": 0})).await;
        assert_eq!(
            (status, error_of(&body)["param"].clone()),
            (400, json!("k"))
        );
        let (status, _) = post(
            "/v1/kb/search",
            json!({"query": "x", "filter": "no operator"}),
        )
        .await;
        assert_eq!(status, 400);

        let question = "How does kb verify the model files it downloads?";
        let (status, body) = post(
            "/v1/kb/ask",
            json!({"question": question, "max_tokens": 48}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("json");
        assert!(
            !answer["text"].as_str().unwrap_or("").trim().is_empty(),
            "{answer}"
        );
        assert!(!answer["sources"].as_array().expect("sources").is_empty());

        let (status, body) = post(
            "/v1/kb/ask",
            json!({"question": question, "max_tokens": 24, "stream": true}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let kinds: Vec<String> = body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                serde_json::from_str::<Value>(d).expect("event")["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("sources"),
            "{kinds:?}"
        );
        assert_eq!(kinds.last().map(String::as_str), Some("done"), "{kinds:?}");
        assert!(kinds.iter().any(|k| k == "token"), "{kinds:?}");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

        // Any OpenAI chat client gets cited answers from the model `kb`.
        let chat = kb_llm::OpenAiChat::builder(format!("{}/v1", server.url), "kb")
            .api_key(Some(KEY.into()))
            .build()
            .expect("client");
        let reply = chat
            .chat(
                &[Message::user(question)],
                &GenerateOptions::default().max_tokens(48),
            )
            .await
            .expect("chat");
        assert!(!reply.message.content.trim().is_empty());
        assert!(
            reply.usage.prompt_tokens > 100,
            "the prompt holds the retrieved context"
        );
        let (status, body) = send(
            &http,
            reqwest::Method::GET,
            format!("{}/v1/models", server.url),
            Some(KEY),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains("\"kb\""), "{body}");
    });
}

#[test]
fn a_slow_request_gets_a_json_504() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start_with(&work.path().join("none"), &["--timeout", "0.05"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let body = json!({"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 400});
        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/chat/completions", server.url),
            Some(KEY),
            Some(body.to_string()),
        )
        .await;
        assert_eq!(status, 504, "{body}");
        assert!(error_of(&body)["message"].as_str().is_some_and(|m| m.contains("--timeout")));
        let (status, _) = send(&http, reqwest::Method::GET, format!("{}/healthz", server.url), None, None).await;
        assert_eq!(status, 200, "the server lives on");
    });
}
