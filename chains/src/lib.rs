//! kb-chains: chains that put models, prompts and retrievers together.
//!
//! - [`RagChain`]: retrieval-augmented answers with verified `[n]`
//!   citations, fitted into the model's context window with its tokenizer,
//!   in the question's language; strategies `stuff`, `map_reduce`, `refine`.
//! - [`ConversationalRagChain`] with [`BufferMemory`] or [`WindowMemory`]:
//!   follow-up questions rewritten into standalone ones before retrieval.
//! - [`LlmChain`]: template → model → parser ([`JsonOutputParser`] repairs
//!   almost-JSON, [`ListOutputParser`]).
//! - [`FewShotChain`] with a [`SemanticExampleSelector`].
//! - [`ClassificationChain`]: template + [`Verbalizer`], scored by the
//!   model's probabilities of the label words.

mod attribution;
mod citation;
mod classify;
mod context;
mod conversational;
mod few_shot;
mod language;
mod llm_chain;
mod memory;
mod parser;
mod prompts;
mod rag;
mod rerank;

pub use attribution::Attributor;
pub use citation::{CitationFilter, Verified, verify_citations};
pub use classify::{ClassScore, Classification, ClassificationChain, Verbalizer};
pub use context::{Fitted, Source, count_tokens, estimate_tokens, fit};
pub use conversational::ConversationalRagChain;
pub use few_shot::{FewShotChain, SemanticExampleSelector};
pub use language::Language;
pub use llm_chain::LlmChain;
pub use memory::{BufferMemory, Memory, WindowMemory};
pub use parser::{JsonOutputParser, ListOutputParser, parse_json, parse_list};
pub use prompts::{RagPrompts, no_answer};
pub use rag::{
    Answer, AnswerEvent, AnswerStream, AnswerTimings, DEFAULT_ANSWER_TOKENS,
    DEFAULT_CONTEXT_WINDOW, RagChain, Strategy, collect_answer, is_abstention,
};
pub use rerank::LlmReranker;
