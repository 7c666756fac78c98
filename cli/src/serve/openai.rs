//! The OpenAI-compatible routes: `GET /v1/models`, `POST /v1/chat/completions`
//! (whole or streamed as server-sent events ending in `data: [DONE]`) and
//! `POST /v1/embeddings`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{Stream, StreamExt, stream};
use kb_core::{ChatEvent, FinishReason, GenerateOptions, Message, Role, ToolCall, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::kb;

/// Tokens generated when a request does not say.
const DEFAULT_MAX_TOKENS: usize = 512;
/// Most texts in one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 256;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut data =
        vec![json!({"id": state.model_id, "object": "model", "created": 0, "owned_by": "kb"})];
    if let Some(id) = &state.embedder_id {
        data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": "kb"}));
    }
    // The chat model that answers from the knowledge base, where there is
    // one (or one can be built by uploading).
    if state.kb().is_some() || state.writable {
        data.push(json!({"id": "kb", "object": "model", "created": 0, "owned_by": "kb"}));
    }
    Json(json!({"object": "list", "data": data}))
}

/// `content` as a string or as a list of parts (`{"type": "text", "text": …}`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    fn text(self) -> Result<String, ApiError> {
        match self {
            Content::Text(text) => Ok(text),
            Content::Parts(parts) => parts
                .iter()
                .map(
                    |part| match (part["type"].as_str(), part["text"].as_str()) {
                        (Some("text"), Some(text)) => Ok(text.to_string()),
                        _ => Err(ApiError::invalid(
                            Some("messages"),
                            "only text content parts are supported",
                        )),
                    },
                )
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Vec<Value>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<usize>,
}

impl ChatRequest {
    fn messages(&mut self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(Some("messages"), "`messages` is empty"));
        }
        std::mem::take(&mut self.messages)
            .into_iter()
            .map(|m| {
                let role: Role = m.role.parse().map_err(|e: kb_core::Error| {
                    ApiError::invalid(Some("messages"), e.to_string())
                })?;
                let content = m
                    .content
                    .map(Content::text)
                    .transpose()?
                    .unwrap_or_default();
                let mut message = Message::new(role, content);
                message.tool_call_id = m.tool_call_id;
                message.tool_calls = m
                    .tool_calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        name: c["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        arguments: c["function"]["arguments"]
                            .as_str()
                            .and_then(|a| serde_json::from_str(a).ok())
                            .unwrap_or(Value::Null),
                    })
                    .collect();
                Ok(message)
            })
            .collect()
    }

    fn options(&self, context: Option<usize>) -> Result<GenerateOptions, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(Some("n"), "only n = 1 is supported"));
        }
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        if let Some(context) = context
            && max_tokens > context
        {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                format!("max_tokens is {max_tokens}, more than the model's context of {context}"),
            ));
        }
        let stops = match &self.stop {
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(all)) => all.clone(),
            None => Vec::new(),
        };
        let o = stops.into_iter().fold(
            GenerateOptions::default()
                .max_tokens(max_tokens)
                .temperature(self.temperature.unwrap_or(0.0))
                .set_some(self.top_p, GenerateOptions::top_p)
                .set_some(self.top_k, GenerateOptions::top_k)
                .set_some(self.min_p, GenerateOptions::min_p)
                .set_some(self.repetition_penalty, GenerateOptions::repetition_penalty)
                .set_some(self.frequency_penalty, GenerateOptions::frequency_penalty)
                .set_some(self.presence_penalty, GenerateOptions::presence_penalty)
                .set_some(self.seed, GenerateOptions::seed),
            |o, s| o.stop(s),
        );
        o.validate().map_err(ApiError::from)?;
        Ok(o)
    }
}

fn finish_name(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    })
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    ApiJson(mut request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let rag = kb::is_kb_model(&request.model);
    if !rag
        && !request.model.is_empty()
        && request.model != state.model_id
        && request.model != "default"
    {
        return Err(ApiError::not_found(format!(
            "the model {:?} is not served here; use {:?} or \"kb\" (see /v1/models)",
            request.model, state.model_id
        )));
    }
    let messages = request.messages()?;
    let options = request.options(state.model.context_window())?;
    let model_id = if request.model.is_empty() {
        state.model_id.clone()
    } else {
        request.model.clone()
    };
    let pieces: Pieces = if rag {
        // The model `kb`: the last user message is answered from the
        // knowledge base, citing [n], with the cited sources after it; the
        // turns before it make a follow-up standalone before retrieval.
        let (history, question) = kb::conversation(&messages).ok_or_else(|| {
            ApiError::invalid(Some("messages"), "there is no user message to answer")
        })?;
        let chain = kb::chain(&state, 4, None, options.max_tokens)?;
        let permit = state.admit()?;
        let answer = if history.is_empty() {
            chain.stream(&question).await?
        } else {
            let mut memory = kb_chains::BufferMemory::new();
            for (user, assistant) in &history {
                kb_chains::Memory::save(&mut memory, user, assistant);
            }
            kb_chains::ConversationalRagChain::new(chain, memory)
                .stream(&question)
                .await?
        };
        Box::pin(held(kb::chat_pieces(answer), permit))
    } else {
        let permit = state.admit()?;
        let events = state.model.stream(&messages, &options).await?;
        Box::pin(held(
            events.filter_map(|event| async move {
                match event {
                    Ok(ChatEvent::Token(text)) => Some(Ok(Piece::Text(text))),
                    Ok(ChatEvent::ToolCall(_)) => None,
                    Ok(ChatEvent::Done { usage, finish, .. }) => {
                        Some(Ok(Piece::End { usage, finish }))
                    }
                    Err(e) => Some(Err(e)),
                }
            }),
            permit,
        ))
    };
    let reply = Reply {
        id: format!("chatcmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        created: now(),
        model: model_id,
        state: state.clone(),
    };
    if request.stream {
        let include_usage = request.stream_options.unwrap_or_default().include_usage;
        Ok(reply.stream(pieces, include_usage))
    } else {
        reply.whole(pieces).await
    }
}

/// A piece of a chat answer: text, then the end.
pub enum Piece {
    Text(String),
    End { usage: Usage, finish: FinishReason },
}

type Pieces = std::pin::Pin<Box<dyn Stream<Item = kb_core::Result<Piece>> + Send>>;

/// `pieces`, holding `permit` (a place in the queue) until they end or are
/// dropped.
fn held(
    pieces: impl Stream<Item = kb_core::Result<Piece>> + Send + 'static,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = kb_core::Result<Piece>> + Send + 'static {
    pieces.map(move |piece| {
        let _held = &permit;
        piece
    })
}

/// One chat completion's identity, and the server's counters.
struct Reply {
    id: String,
    created: u64,
    model: String,
    state: Arc<AppState>,
}

impl Reply {
    fn count(&self, usage: &Usage) {
        self.state
            .metrics
            .add_tokens(usage.completion_tokens as u64);
    }

    /// The whole answer as one `chat.completion` object.
    async fn whole(self, mut pieces: Pieces) -> Result<Response, ApiError> {
        let mut text = String::new();
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Text(t) => text.push_str(&t),
                Piece::End { usage, finish } => {
                    self.count(&usage);
                    return Ok(Json(json!({
                        "id": self.id,
                        "object": "chat.completion",
                        "created": self.created,
                        "model": self.model,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish_name(finish),
                        }],
                        "usage": usage_json(&usage),
                    }))
                    .into_response());
                }
            }
        }
        Err(kb_core::Error::Model("the answer ended early".into()).into())
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The answer as server-sent `chat.completion.chunk`s.
    fn stream(self, pieces: Pieces, include_usage: bool) -> Response {
        let first = self.chunk(json!({"role": "assistant", "content": ""}), None);
        let body = pieces.map(move |piece| match piece {
            Ok(Piece::Text(text)) => vec![self.chunk(json!({"content": text}), None)],
            Ok(Piece::End { usage, finish }) => {
                self.count(&usage);
                let mut last = vec![self.chunk(json!({}), Some(finish_name(finish)))];
                if include_usage {
                    let mut usage_chunk = self.chunk(json!({}), None);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage_json(&usage);
                    last.push(usage_chunk);
                }
                last
            }
            Err(e) => {
                let error: ApiError = e.into();
                vec![json!({"error": {"message": error.message, "type": error.kind}})]
            }
        });
        sse(stream::once(async move { vec![first] }).chain(body)).into_response()
    }
}

/// Server-sent events: one `data:` line per JSON value, then `data: [DONE]`.
pub(super) fn sse(
    values: impl Stream<Item = Vec<Value>> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = values
        .flat_map(stream::iter)
        .map(|value| Ok(Event::default().data(value.to_string())))
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(events)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    input: Input,
    #[serde(default)]
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let (Some(embedder), Some(embedder_id)) = (&state.embedder, &state.embedder_id) else {
        return Err(ApiError::not_found("this server has no embedder"));
    };
    if !request.model.is_empty() && &request.model != embedder_id && request.model != "default" {
        return Err(ApiError::not_found(format!(
            "the embedding model {:?} is not served here; use {embedder_id:?}",
            request.model
        )));
    }
    // OpenAI's own clients ask for base64 (the floats' little-endian bytes)
    // unless told otherwise.
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("encoding_format {other:?} is not one of \"float\", \"base64\""),
            ));
        }
    };
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid(
            Some("input"),
            format!(
                "give 1 to {MAX_EMBEDDING_INPUTS} texts, not {}",
                texts.len()
            ),
        ));
    }
    let permit = state.admit()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed_documents(&refs).await?;
    drop(permit);
    let tokens: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(BASE64.encode(bytes))
            } else {
                json!(embedding)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": embedder_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
