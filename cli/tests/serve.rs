//! `kb serve` as clients use it: kb's own remote chat model and embedder
//! against it (a closed loop over the real local models), the OpenAI wire
//! format, SSE framing, auth, body limits, malformed requests, metrics and
//! a graceful stop on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{KEY, runtime, start, start_with};

use futures::StreamExt;
use kb_core::{ChatEvent, ChatModel, Embedder, GenerateOptions, Message};
use serde_json::{Value, json};

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
    let rt = runtime();
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
        assert!(error_of(&body)["message"].as_str().is_some_and(|m| m.contains("upload documents")));

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
    let rt = runtime();
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
        // A follow-up: the earlier turn makes it standalone before retrieval.
        let follow_up = chat
            .chat(
                &[
                    Message::user(question),
                    Message::assistant(reply.message.content.clone()),
                    Message::user("And where are they kept afterwards?"),
                ],
                &GenerateOptions::default().max_tokens(32),
            )
            .await
            .expect("follow-up");
        assert!(!follow_up.message.content.trim().is_empty());
        assert!(follow_up.usage.prompt_tokens > 100);
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
    let rt = runtime();
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

/// `GET url` with the key.
async fn get(http: &reqwest::Client, url: String) -> (u16, String) {
    send(http, reqwest::Method::GET, url, Some(KEY), None).await
}

/// A multipart upload of `(file name, content)` pairs.
async fn upload(http: &reqwest::Client, url: &str, files: &[(&str, &str)]) -> (u16, String) {
    let mut form = reqwest::multipart::Form::new();
    for (name, content) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::text(content.to_string()).file_name(name.to_string()),
        );
    }
    let response = http
        .post(format!("{url}/v1/kb/documents"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

const OTTERS: &str =
    "# Otters\n\nSea otters hold hands while they sleep so that they do not drift apart.\n";

#[test]
fn documents_are_uploaded_listed_and_deleted() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_dir = work.path().join("kb");
    let server = start_with(&kb_dir, &["--max-upload", "65536"]);
    let rt = runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let list = || async {
            let (status, body) = get(&http, format!("{url}/v1/kb/documents")).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).expect("json")["data"]
                .as_array()
                .expect("data")
                .clone()
        };
        assert!(
            list().await.is_empty(),
            "no knowledge base yet: an empty list"
        );

        // The first upload builds the knowledge base.
        let (status, body) = upload(&http, &url, &[("otters.md", OTTERS)]).await;
        assert_eq!(status, 201, "{body}");
        let created: Value = serde_json::from_str(&body).expect("json");
        let document = &created["data"][0];
        assert_eq!(document["uploaded"], true, "{body}");
        assert!(document["chunks"].as_u64().unwrap_or(0) >= 1, "{body}");
        let id = document["id"].as_str().expect("id").to_string();
        assert!(kb_dir.join("uploads/otters.md").is_file());

        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/kb/search"),
            Some(KEY),
            Some(json!({"query": "Why do otters hold hands?", "k": 1}).to_string()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("drift apart"),
            "the upload is searchable: {body}"
        );

        // Hostile and broken uploads change nothing.
        let (status, body) = upload(&http, &url, &[("../../escape.md", OTTERS)]).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error_of(&body)["message"]
                .as_str()
                .is_some_and(|m| m.contains("path"))
        );
        assert!(!work.path().join("escape.md").exists() && !kb_dir.join("escape.md").exists());
        let (status, body) = upload(&http, &url, &[("tool.exe", "MZ")]).await;
        assert_eq!(
            (status, error_of(&body)["code"].clone()),
            (415, json!("unsupported_file_type"))
        );
        let (status, body) = upload(&http, &url, &[("broken.json", "{\"text\": ")]).await;
        assert_eq!(
            (status, error_of(&body)["code"].clone()),
            (422, json!("unreadable_file"))
        );
        let (status, body) = upload(&http, &url, &[("huge.txt", &"x".repeat(70_000))]).await;
        assert_eq!(status, 413, "{body}");
        assert!(
            error_of(&body)["message"]
                .as_str()
                .is_some_and(|m| m.contains("--max-upload"))
        );
        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/kb/documents"),
            Some(KEY),
            Some("{}".into()),
        )
        .await;
        assert_eq!(status, 400, "not multipart: {body}");
        error_of(&body);
        assert_eq!(list().await.len(), 1);
        let staged: Vec<_> = std::fs::read_dir(kb_dir.join("uploads"))
            .expect("uploads")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(staged, ["otters.md"], "nothing staged is left behind");

        // The same name again replaces the document.
        let (status, body) = upload(
            &http,
            &url,
            &[(
                "otters.md",
                &format!("{OTTERS}\nThey also keep a favourite rock.\n"),
            )],
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["report"]["updated"],
            1
        );
        assert_eq!(list().await.len(), 1);

        let delete = |id: String| {
            send(
                &http,
                reqwest::Method::DELETE,
                format!("{url}/v1/kb/documents/{id}"),
                Some(KEY),
                None,
            )
        };
        let (status, body) = delete(id.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !kb_dir.join("uploads/otters.md").exists(),
            "an upload's file goes with it"
        );
        assert!(list().await.is_empty());
        let (status, body) = delete(id).await;
        assert_eq!(
            (status, error_of(&body)["code"].clone()),
            (404, json!("document_not_found"))
        );

        let (status, body) = get(&http, format!("{url}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            body.contains(
                "kb_request_duration_seconds_bucket{route=\"/v1/kb/documents\",le=\"+Inf\"}"
            ) && body.contains("kb_requests_total{route=\"/v1/kb/documents\",status=\"415\"} 1"),
            "{body}"
        );
    });
    drop(server);

    // A read-only server refuses changes.
    let server = start_with(&kb_dir, &["--read-only"]);
    rt.block_on(async {
        let (status, body) = upload(
            &reqwest::Client::new(),
            &server.url,
            &[("otters.md", OTTERS)],
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(
            error_of(&body)["message"]
                .as_str()
                .is_some_and(|m| m.contains("--read-only"))
        );
    });
}

/// Markdown whose every chunk names `revision`.
fn revised(revision: &str) -> String {
    (1..=5)
        .map(|part| {
            let line = format!("In revision {revision}, part {part} says the same thing again. ");
            format!("## Part {part}\n\n{}\n\n", line.repeat(8))
        })
        .collect()
}

#[test]
fn searches_during_an_upload_see_the_old_or_the_new_document() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work.path().join("kb"));
    let rt = runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let (status, body) = upload(&http, &url, &[("doc.md", &revised("alpha"))]).await;
        assert_eq!(status, 201, "{body}");
        let chunks = serde_json::from_str::<Value>(&body).expect("json")["data"][0]["chunks"]
            .as_u64()
            .expect("chunks") as usize;
        assert!(chunks >= 3, "{body}");

        let search = || async {
            let (status, body) = send(
                &http,
                reqwest::Method::POST,
                format!("{url}/v1/kb/search"),
                Some(KEY),
                Some(json!({"query": "which part says it again?", "k": 20}).to_string()),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let hits = serde_json::from_str::<Value>(&body).expect("json")["results"]
                .as_array()
                .expect("results")
                .clone();
            let results = hits
                .iter()
                .map(|hit| {
                    hit["chunk"]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect::<Vec<_>>();
            // Neighbouring chunks come back joined: count what each hit holds.
            let found: usize = hits
                .iter()
                .map(|hit| {
                    hit["chunk"]["metadata"]["chunks"]
                        .as_array()
                        .map_or(1, Vec::len)
                })
                .sum();
            let revisions: std::collections::BTreeSet<&str> = results
                .iter()
                .filter_map(|text| {
                    ["alpha", "beta", "gamma", "delta", "epsilon"]
                        .into_iter()
                        .find(|r| text.contains(&format!("revision {r}")))
                })
                .collect();
            assert_eq!(revisions.len(), 1, "a mix: {results:?}");
            assert_eq!(found, chunks, "a part: {results:?}");
            revisions.into_iter().next().unwrap_or_default().to_string()
        };
        for revision in ["beta", "gamma", "delta", "epsilon"] {
            // Searches run, each to its end, for as long as the upload does.
            // Their query embeddings queue behind the upload's passages on
            // the embedder, so some of them read the indexes while the
            // upload commits.
            let replace = tokio::spawn({
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let text = revised(revision);
                    upload(&http, &url, &[("doc.md", text.as_str())]).await
                }
            });
            while !replace.is_finished() {
                search().await;
            }
            let (status, body) = replace.await.expect("upload");
            assert_eq!(status, 201, "{body}");
            assert_eq!(search().await, revision, "the upload is searchable");
        }
    });
}

#[test]
fn sixty_four_streamed_chats_some_cancelled_all_accounted_for() {
    let work = tempfile::tempdir().expect("tempdir");
    let server = start_with(&work.path().join("no-kb"), &["--queue", "64"]);
    let rt = runtime();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let chat = |i: usize| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body = json!({
                    "messages": [{"role": "user", "content": format!("Count to {}.", i % 7 + 2)}],
                    "max_tokens": 6,
                    "stream": true,
                });
                let response = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status().as_u16(), 200, "chat {i}");
                let mut stream = response.bytes_stream();
                let mut text = String::new();
                while let Some(bytes) = stream.next().await {
                    text.push_str(&String::from_utf8_lossy(&bytes.expect("bytes")));
                    // Every other client hangs up after its first token.
                    if i % 2 == 1 && text.contains("\"content\"") {
                        return None;
                    }
                }
                Some(text)
            }
        };
        let outcomes = futures::future::join_all((0..64).map(chat)).await;
        let finished: Vec<&String> = outcomes.iter().flatten().collect();
        assert_eq!(finished.len(), 32, "the clients that stayed were answered");
        for text in &finished {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        }

        // The cancelled streams gave their places back...
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, metrics) = get(&http, format!("{url}/metrics")).await;
            if metrics.contains("kb_queue_depth 0\n") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the queue did not drain: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ...and the model is free for the next one.
        let started = Instant::now();
        let (status, body) = send(
            &http,
            reqwest::Method::POST,
            format!("{url}/v1/chat/completions"),
            Some(KEY),
            Some(
                json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
                    .to_string(),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    });
}

/// The Python interpreter that has OpenAI's and LangChain's clients
/// (`scripts/python-clients.sh`), or `None` (a skip) where there is none and
/// `KB_REQUIRE_PYTHON_CLIENTS` is unset.
fn python_clients() -> Option<String> {
    let required = std::env::var_os("KB_REQUIRE_PYTHON_CLIENTS").is_some_and(|v| v != "0");
    let python = std::env::var("KB_PYTHON_CLIENTS").ok().filter(|p| {
        Command::new(p)
            .args(["-c", "import openai, langchain_openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if python.is_none() {
        assert!(
            !required,
            "KB_REQUIRE_PYTHON_CLIENTS is set but KB_PYTHON_CLIENTS names no python with \
             openai and langchain_openai (scripts/python-clients.sh makes one)"
        );
        eprintln!("SKIPPED: set KB_PYTHON_CLIENTS=$(scripts/python-clients.sh)");
    }
    python
}

/// What the clients do, each with its defaults (OpenAI's client asks for
/// base64 embeddings); one JSON line of what they got.
const PYTHON_CLIENTS: &str = r#"
import json, os
from openai import OpenAI
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

url, key = os.environ["KB_URL"], os.environ["KB_KEY"]
client = OpenAI(base_url=url, api_key=key)
models = [m.id for m in client.models.list().data]
chat_model, embedder = models[0], models[1]
question = [{"role": "user", "content": "What is the capital of France?"}]

by_default = client.embeddings.create(model=embedder, input=["注意力机制", "attention heads"])
as_floats = client.embeddings.create(
    model=embedder, input=["注意力机制", "attention heads"], encoding_format="float")
whole = client.chat.completions.create(
    model=chat_model, messages=question, max_tokens=8, temperature=0)
streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(
        model=chat_model, messages=question, max_tokens=8, temperature=0, stream=True)
    if chunk.choices)

embeddings = OpenAIEmbeddings(
    model=embedder, base_url=url, api_key=key, check_embedding_ctx_length=False)
llm = ChatOpenAI(model=chat_model, base_url=url, api_key=key, max_tokens=8, temperature=0)
print(json.dumps({
    "models": models,
    "by_default": [d.embedding for d in by_default.data],
    "as_floats": [d.embedding for d in as_floats.data],
    "usage": by_default.usage.total_tokens,
    "whole": whole.choices[0].message.content,
    "streamed": streamed,
    "langchain_embedding": embeddings.embed_query("注意力机制"),
    "langchain_documents": len(embeddings.embed_documents(["a", "b", "c"])),
    "langchain_answer": llm.invoke(question[0]["content"]).content,
}))
"#;

/// Clients written by others, as their users write them: the official
/// OpenAI Python client (embeddings with its default base64 encoding and as
/// floats, a chat whole and streamed) and LangChain's `OpenAIEmbeddings` and
/// `ChatOpenAI`.
#[test]
fn openai_and_langchain_python_clients_use_it_with_their_defaults() {
    let Some(python) = python_clients() else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let server = start(&work.path().join("kb"));
    let output = Command::new(python)
        .args(["-c", PYTHON_CLIENTS])
        .env("KB_URL", format!("{}/v1", server.url))
        .env("KB_KEY", KEY)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    let models: Vec<&str> = got["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        models.contains(&"kb"),
        "the knowledge base's model: {models:?}"
    );
    let vectors =
        |key: &str| -> Vec<Vec<f64>> { serde_json::from_value(got[key].clone()).expect("vectors") };
    let (by_default, as_floats) = (vectors("by_default"), vectors("as_floats"));
    assert_eq!(by_default.len(), 2);
    assert_eq!(by_default[0].len(), 384);
    // base64 carries the same floats, bit for bit.
    assert_eq!(by_default, as_floats);
    let norm: f64 = by_default[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert!(got["usage"].as_u64().unwrap_or(0) > 0, "{got}");
    let langchain: Vec<f64> =
        serde_json::from_value(got["langchain_embedding"].clone()).expect("vector");
    assert_eq!(langchain, by_default[0]);
    assert_eq!(got["langchain_documents"], 3);
    // Greedy: the same answer whole, streamed and through LangChain.
    let whole = got["whole"].as_str().expect("answer");
    assert!(whole.contains("Paris"), "{whole}");
    assert_eq!(got["streamed"], whole);
    assert_eq!(got["langchain_answer"], whole);
}
