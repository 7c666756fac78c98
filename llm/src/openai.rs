//! [`OpenAiChat`]: a chat model behind any server that speaks OpenAI's
//! `/v1/chat/completions` (OpenAI, Ollama, vLLM, llama.cpp's server,
//! `kb serve`), with SSE streaming, timeouts and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::channel::mpsc;
use kb_core::{
    ChatEvent, ChatModel, ChatResponse, ChatStream, FinishReason, GenerateOptions, Message, Role,
    ToolCall, Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// A remote chat model.
///
/// Requests that fail with 429 or a 5xx status, or cannot connect, are retried
/// with exponential backoff (honouring `Retry-After`); other 4xx answers are
/// errors that quote the server's message. A stream is retried only before
/// its first byte.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    max_retries: u32,
    native_tools: bool,
}

/// Settings for an [`OpenAiChat`].
#[derive(Debug, Clone)]
pub struct OpenAiChatBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    native_tools: bool,
}

impl OpenAiChatBuilder {
    /// The API key sent as a bearer token (none for local servers).
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// The limit for a whole request, streaming included (default 10 min).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limit for connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retries after a 429, a 5xx or a connection failure (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Whether the server understands OpenAI's `tools` (default true). Turn
    /// it off for servers that reject them; agents then use a text protocol.
    pub fn native_tools(mut self, on: bool) -> Self {
        self.native_tools = on;
        self
    }

    /// Builds the client.
    pub fn build(self) -> kb_core::Result<OpenAiChat> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| kb_core::Error::Model(format!("HTTP client: {e}")))?;
        Ok(OpenAiChat {
            client,
            url: format!("{}/chat/completions", self.base_url.trim_end_matches('/')),
            model: self.model,
            api_key: self.api_key,
            max_retries: self.max_retries,
            native_tools: self.native_tools,
        })
    }
}

impl OpenAiChat {
    /// A client for `model` at `base_url` (`http://localhost:8080/v1`).
    pub fn builder(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiChatBuilder {
        OpenAiChatBuilder {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            max_retries: 3,
            native_tools: true,
        }
    }

    fn body(&self, messages: &[Message], options: &GenerateOptions, stream: bool) -> Value {
        let messages: Vec<Value> = messages.iter().map(wire_message).collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": options.temperature,
            "stream": stream,
        });
        let map = body.as_object_mut().expect("a JSON object literal");
        if stream {
            map.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if let Some(n) = options.max_tokens {
            map.insert("max_tokens".into(), json!(n));
        }
        if let Some(p) = options.top_p {
            map.insert("top_p".into(), json!(p));
        }
        if !options.stop.is_empty() {
            map.insert("stop".into(), json!(options.stop));
        }
        if let Some(seed) = options.seed {
            map.insert("seed".into(), json!(seed));
        }
        if options.frequency_penalty != 0.0 {
            map.insert("frequency_penalty".into(), json!(options.frequency_penalty));
        }
        if options.presence_penalty != 0.0 {
            map.insert("presence_penalty".into(), json!(options.presence_penalty));
        }
        // Not OpenAI's, but understood by vLLM, llama.cpp and Ollama's
        // OpenAI endpoint; sent only when set.
        if let Some(k) = options.top_k {
            map.insert("top_k".into(), json!(k));
        }
        if let Some(p) = options.min_p {
            map.insert("min_p".into(), json!(p));
        }
        if options.repetition_penalty != 1.0 {
            map.insert(
                "repetition_penalty".into(),
                json!(options.repetition_penalty),
            );
        }
        if !options.tools.is_empty() {
            let tools: Vec<Value> = options
                .tools
                .iter()
                .map(|tool| json!({"type": "function", "function": tool}))
                .collect();
            map.insert("tools".into(), Value::Array(tools));
        }
        body
    }

    /// Sends `body`, retrying what is worth retrying; returns a response with
    /// a success status.
    async fn send(&self, body: &Value) -> kb_core::Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            let mut request = self.client.post(&self.url).json(body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let (error, retry_after) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let message = server_message(response).await;
                    let error =
                        kb_core::Error::Model(format!("{} answered {status}: {message}", self.url));
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) if e.is_timeout() => {
                    return Err(kb_core::Error::Model(format!(
                        "{} did not answer in time: {e}",
                        self.url
                    )));
                }
                Err(e) => (
                    kb_core::Error::Model(format!("cannot reach {}: {e}", self.url)),
                    None,
                ),
            };
            if attempt >= self.max_retries {
                return Err(error);
            }
            let backoff = retry_after
                .unwrap_or_else(|| Duration::from_millis(250 * 2u64.pow(attempt)))
                .min(Duration::from_secs(30));
            tracing::warn!(%error, ?backoff, "retrying chat request");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}

fn wire_message(m: &Message) -> Value {
    let mut v = json!({"role": m.role.as_str(), "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

async fn server_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: usize,
    #[serde(default)]
    completion_tokens: usize,
    #[serde(default)]
    prompt_tokens_details: Option<Value>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            cached_prompt_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d["cached_tokens"].as_u64())
                .unwrap_or(0) as usize,
            completion_tokens: self.completion_tokens,
        }
    }
}

/// Tool calls assembled from streamed fragments, by index.
#[derive(Default)]
struct PartialCalls(BTreeMap<u64, (String, String, String)>);

impl PartialCalls {
    fn add(&mut self, fragments: &Value) {
        for f in fragments.as_array().into_iter().flatten() {
            let index = f["index"].as_u64().unwrap_or(0);
            let entry = self.0.entry(index).or_default();
            if let Some(id) = f["id"].as_str() {
                entry.0.push_str(id);
            }
            if let Some(name) = f["function"]["name"].as_str() {
                entry.1.push_str(name);
            }
            if let Some(args) = f["function"]["arguments"].as_str() {
                entry.2.push_str(args);
            }
        }
    }

    fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_values()
            .map(|(id, name, arguments)| ToolCall {
                id,
                name,
                arguments: serde_json::from_str(&arguments).unwrap_or(Value::String(arguments)),
            })
            .collect()
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    fn name(&self) -> &str {
        &self.model
    }

    fn supports_tools(&self) -> bool {
        self.native_tools
    }

    async fn chat(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> kb_core::Result<ChatResponse> {
        options.validate()?;
        let response = self.send(&self.body(messages, options, false)).await?;
        let value: Value = response.json().await.map_err(|e| {
            kb_core::Error::Model(format!(
                "{} answered with an unexpected body: {e}",
                self.url
            ))
        })?;
        let choice = &value["choices"][0];
        if choice.is_null() {
            return Err(kb_core::Error::Model(format!(
                "{} answered without choices",
                self.url
            )));
        }
        let mut message = Message::new(
            Role::Assistant,
            choice["message"]["content"].as_str().unwrap_or_default(),
        );
        let mut calls = PartialCalls::default();
        calls.add(&choice["message"]["tool_calls"]);
        message.tool_calls = calls.finish();
        let usage: WireUsage = serde_json::from_value(value["usage"].clone()).unwrap_or_default();
        Ok(ChatResponse {
            message,
            finish_reason: finish_reason(choice["finish_reason"].as_str()),
            usage: usage.usage(),
            timings: None,
        })
    }

    async fn stream(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> kb_core::Result<ChatStream> {
        options.validate()?;
        let response = self.send(&self.body(messages, options, true)).await?;
        let url = self.url.clone();
        let (tx, rx) = mpsc::unbounded();
        let mut bytes = response.bytes_stream();
        let pump = async move {
            let mut buffer: Vec<u8> = Vec::new();
            let mut usage = Usage::default();
            let mut finish = FinishReason::Stop;
            let mut calls = PartialCalls::default();
            let mut done = false;
            while !done {
                let chunk = match bytes.next().await {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => {
                        let _ = tx.unbounded_send(Err(kb_core::Error::Model(format!(
                            "the stream from {url} broke: {e}"
                        ))));
                        return;
                    }
                    None => break,
                };
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some(data) = line.trim().strip_prefix("data:") else {
                        continue;
                    };
                    let data = data.trim();
                    if data == "[DONE]" {
                        done = true;
                        break;
                    }
                    let Ok(event) = serde_json::from_str::<Value>(data) else {
                        let _ = tx.unbounded_send(Err(kb_core::Error::Model(format!(
                            "{url} sent a malformed event: {}",
                            data.chars().take(200).collect::<String>()
                        ))));
                        return;
                    };
                    if let Some(message) = event["error"]["message"].as_str() {
                        let _ = tx.unbounded_send(Err(kb_core::Error::Model(format!(
                            "{url} failed mid-stream: {message}"
                        ))));
                        return;
                    }
                    if let Ok(u) = serde_json::from_value::<WireUsage>(event["usage"].clone()) {
                        usage = u.usage();
                    }
                    let choice = &event["choices"][0];
                    if let Some(text) = choice["delta"]["content"].as_str()
                        && !text.is_empty()
                        && tx
                            .unbounded_send(Ok(ChatEvent::Token(text.to_string())))
                            .is_err()
                    {
                        return; // the caller dropped the stream
                    }
                    calls.add(&choice["delta"]["tool_calls"]);
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        finish = finish_reason(Some(reason));
                    }
                }
            }
            for call in calls.finish() {
                let _ = tx.unbounded_send(Ok(ChatEvent::ToolCall(call)));
            }
            let _ = tx.unbounded_send(Ok(ChatEvent::Done {
                usage,
                finish,
                timings: None,
            }));
        };
        tokio::spawn(pump);
        Ok(Box::pin(rx))
    }
}
