//! kb: retrieval-augmented generation and agents, offline, in one fast binary.
//!
//! This facade re-exports the kb crates so that one dependency gives
//! everything; each part is a cargo feature, all on by default.
//!
//! | feature | crate | what it holds |
//! |---|---|---|
//! | (always) | [`kb_core`], re-exported at the root | documents, messages, the traits, runnables, prompt templates, model fetching |
//! | `llm` | [`llm`] | the local GGUF engine and remote OpenAI-compatible chat models |
//! | `embeddings` | [`embeddings`] | local BERT-family and remote embedders |
//! | `retrievers` | [`retrievers`] | loaders, splitters, vector stores, BM25, hybrid retrieval |
//! | `chains` | [`chains`] | LLM and RAG chains |
//! | `agents` | [`agents`] | tools and agents |
//!
//! ```
//! use kb::{PromptTemplate, Runnable};
//! # futures::executor::block_on(async {
//! let prompt = PromptTemplate::new("Summarise {{ text }}")?;
//! let value = prompt.invoke(serde_json::json!({"text": "the notes"})).await?;
//! assert_eq!(value.to_text(), "Summarise the notes");
//! # Ok::<(), kb::Error>(())
//! # }).unwrap();
//! ```

pub use kb_core::*;

#[cfg(feature = "agents")]
pub use kb_agents as agents;
#[cfg(feature = "chains")]
pub use kb_chains as chains;
#[cfg(feature = "embeddings")]
pub use kb_embeddings as embeddings;
#[cfg(feature = "llm")]
pub use kb_llm as llm;
#[cfg(feature = "retrievers")]
pub use kb_retrievers as retrievers;
