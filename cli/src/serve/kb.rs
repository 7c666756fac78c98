//! The knowledge-base routes: `POST /v1/kb/search` and `POST /v1/kb/ask`
//! (whole or streamed), and RAG behind the chat API for the model `kb`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use kb_chains::{Answer, AnswerEvent, AnswerStream, RagChain};
use kb_core::{Filter, GenerateOptions, Message, Role};
use kb_retrievers::{KnowledgeBase, SearchMode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiJson};
use super::openai::Piece;

/// Most chunks one request may ask for.
const MAX_K: usize = 50;

/// Whether a chat request's `model` asks for answers from the knowledge base.
pub fn is_kb_model(model: &str) -> bool {
    model == "kb" || model.starts_with("kb:")
}

fn knowledge_base(state: &AppState) -> Result<Arc<KnowledgeBase>, ApiError> {
    state.kb().ok_or_else(|| ApiError {
        code: Some("knowledge_base_not_found"),
        ..ApiError::not_found(if state.writable {
            "the knowledge base is empty: upload documents (POST /v1/kb/documents) first"
        } else {
            "this server has no knowledge base: build one with `kb ingest` and restart `kb serve`"
        })
    })
}

fn filter(text: Option<&str>) -> Result<Option<Filter>, ApiError> {
    text.map(|f| {
        f.parse::<Filter>()
            .map_err(|e| ApiError::invalid(Some("filter"), e.to_string()))
    })
    .transpose()
}

fn check_k(k: usize) -> Result<usize, ApiError> {
    if k == 0 || k > MAX_K {
        return Err(ApiError::invalid(
            Some("k"),
            format!("k must be 1 to {MAX_K}, not {k}"),
        ));
    }
    Ok(k)
}

#[derive(Deserialize)]
pub struct SearchRequest {
    query: String,
    #[serde(default = "default_search_k")]
    k: usize,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

fn default_search_k() -> usize {
    5
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let kb = knowledge_base(&state)?;
    if request.query.trim().is_empty() {
        return Err(ApiError::invalid(Some("query"), "the query is empty"));
    }
    let k = check_k(request.k)?;
    let mode: SearchMode = match request.mode.as_deref() {
        Some(m) => m
            .parse()
            .map_err(|e: kb_retrievers::Error| ApiError::invalid(Some("mode"), e.to_string()))?,
        None => SearchMode::Hybrid,
    };
    let filter = filter(request.filter.as_deref())?;
    let _permit = state.admit()?;
    let hits = kb.search(&request.query, k, filter.as_ref(), mode).await?;
    Ok(Json(json!({"query": request.query, "results": hits})))
}

#[derive(Deserialize)]
pub struct AskRequest {
    question: String,
    #[serde(default = "default_ask_k")]
    k: usize,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<usize>,
}

fn default_ask_k() -> usize {
    4
}

/// The RAG chain over the server's knowledge base.
pub fn chain(
    state: &AppState,
    k: usize,
    filter: Option<Filter>,
    max_tokens: Option<usize>,
) -> Result<RagChain, ApiError> {
    let kb = knowledge_base(state)?;
    let mut options = GenerateOptions::default().repetition_penalty(1.1);
    if let Some(n) = max_tokens {
        options = options.max_tokens(n);
    }
    options.validate().map_err(ApiError::from)?;
    Ok(
        RagChain::new(Arc::new(kb.retriever(filter)), state.model.clone())
            .k(k)
            .options(options),
    )
}

pub async fn ask(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<AskRequest>,
) -> Result<Response, ApiError> {
    if request.question.trim().is_empty() {
        return Err(ApiError::invalid(Some("question"), "the question is empty"));
    }
    let chain = chain(
        &state,
        check_k(request.k)?,
        filter(request.filter.as_deref())?,
        request.max_tokens,
    )?;
    let permit = state.admit()?;
    let answer = chain.stream(&request.question).await?;
    if !request.stream {
        let answer = kb_chains::collect_answer(answer).await?;
        drop(permit);
        state
            .metrics
            .add_tokens(answer.usage.completion_tokens as u64);
        return Ok(Json(answer).into_response());
    }
    let events = answer.map(move |event| {
        let _held = &permit;
        match event {
            Ok(AnswerEvent::Sources(sources)) => json!({"type": "sources", "sources": sources}),
            Ok(AnswerEvent::Token(text)) => json!({"type": "token", "text": text}),
            Ok(AnswerEvent::Done(answer)) => {
                state
                    .metrics
                    .add_tokens(answer.usage.completion_tokens as u64);
                json!({"type": "done", "answer": answer})
            }
            Err(e) => {
                let error = ApiError::from(e);
                json!({"type": "error", "error": {"message": error.message, "type": error.kind}})
            }
        }
    });
    Ok(super::openai::sse(events.map(|v| vec![v])).into_response())
}

/// A chat request's messages as earlier (question, answer) turns and the
/// question to answer now (the last user message), or `None` without one.
/// Answers are taken without the sources list this server appends.
pub fn conversation(messages: &[Message]) -> Option<(Vec<(String, String)>, String)> {
    let last = messages
        .iter()
        .rposition(|m| m.role == Role::User && !m.content.trim().is_empty())?;
    let mut turns = Vec::new();
    let mut asked: Option<&str> = None;
    for message in &messages[..last] {
        match message.role {
            Role::User => asked = Some(&message.content),
            Role::Assistant => {
                if let Some(question) = asked.take() {
                    let answer = message
                        .content
                        .split_once(SOURCES_HEADING)
                        .map_or(message.content.as_str(), |(text, _)| text);
                    turns.push((question.to_string(), answer.trim().to_string()));
                }
            }
            _ => {}
        }
    }
    Some((turns, messages[last].content.clone()))
}

/// What separates an answer from its sources in chat replies.
const SOURCES_HEADING: &str = "\n\nSources:\n";

/// An answer's text for a chat client: the answer, then the sources it
/// cites, numbered as in the text.
pub fn with_sources(answer: &Answer) -> String {
    let cited: Vec<String> = answer
        .sources
        .iter()
        .filter(|s| answer.cited.contains(&s.number))
        .map(|s| format!("[{}] {}", s.number, s.source))
        .collect();
    if cited.is_empty() {
        return String::new();
    }
    format!("{SOURCES_HEADING}{}", cited.join("\n"))
}

/// The answer stream as chat pieces: tokens, then the cited sources, then
/// the end.
pub fn chat_pieces(
    answer: AnswerStream,
) -> impl Stream<Item = kb_core::Result<Piece>> + Send + 'static {
    answer
        .filter_map(|event| async move {
            match event {
                Ok(AnswerEvent::Sources(_)) => None,
                Ok(AnswerEvent::Token(text)) => Some(Ok(vec![Piece::Text(text)])),
                Ok(AnswerEvent::Done(answer)) => Some(Ok(vec![
                    Piece::Text(with_sources(&answer)),
                    Piece::End {
                        usage: answer.usage,
                        finish: answer.finish_reason,
                    },
                ])),
                Err(e) => Some(Err(e)),
            }
        })
        .flat_map(|pieces| match pieces {
            Ok(pieces) => stream::iter(pieces.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_becomes_turns_and_a_question() {
        let messages = [
            Message::system("Be brief."),
            Message::user("What is BM25?"),
            Message::assistant("A ranking function [1].\n\nSources:\n[1] docs/a.md"),
            Message::user("unanswered"),
            Message::user("How fast is it?"),
            Message::assistant(""),
        ];
        let (turns, question) = conversation(&messages).expect("a question");
        assert_eq!(question, "How fast is it?");
        assert_eq!(
            turns,
            vec![(
                "What is BM25?".to_string(),
                "A ranking function [1].".to_string()
            )]
        );
        assert!(conversation(&[Message::system("x")]).is_none());
        assert!(conversation(&[Message::user("  ")]).is_none());
    }
}
