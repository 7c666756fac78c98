//! kb-llm: the local quantized GGUF engine.
//!
//! [`GgufModel`] loads a GGUF file of the Llama family (Llama, Mistral, SmolLM,
//! Qwen 2, Qwen 3) or Gemma 3 for the CPU, its weights kept in their ggml
//! types (Q4_0 … Q8_0, Q2_K … Q6_K) and multiplied by [`kb_kernels`]: the [`Tokenizer`] and [`ChatTemplate`] come from
//! the file's own metadata, generation supports every decoding strategy of
//! [`kb_core::GenerateOptions`] (greedy, temperature, top-k/p, min-p,
//! penalties, no-repeat-n-gram, beam search, stop strings, seeds), and a
//! [`Session`]'s key/value cache lets a request that shares a prompt prefix
//! with the previous one skip it. [`LocalLlm`] serves a model as a
//! [`kb_core::ChatModel`].
//!
//! ```no_run
//! use kb_core::{ChatModel, GenerateOptions, Message};
//! use kb_llm::{LoadOptions, LocalLlm};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let llm = LocalLlm::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &LoadOptions::default())?;
//! let answer = llm
//!     .chat(&[Message::user("What is the capital of France?")], &GenerateOptions::default())
//!     .await?;
//! println!("{}", answer.message.content);
//! # Ok(())
//! # }
//! ```

mod backend;
mod device;
mod engine;
mod error;
mod gguf;
mod local;
mod models;
mod open;
#[cfg(feature = "remote")]
mod openai;
mod ops;
mod sampler;
pub mod template;
mod tokenizer;

pub use backend::Backend;
pub use engine::{DEFAULT_MAX_TOKENS, Generation, GgufModel, LoadOptions, Session};
pub use error::{LlmError, Result};
pub use gguf::GgufFile;
pub use kb_kernels::Isa;
pub use local::LocalLlm;
#[cfg(feature = "remote")]
pub use open::remote;
pub use open::{is_remote, open};
#[cfg(feature = "remote")]
pub use openai::{OpenAiChat, OpenAiChatBuilder};
pub use sampler::{REPETITION_WINDOW, Sampler, argmax};
pub use template::ChatTemplate;
pub use tokenizer::{StreamDecoder, Tokenizer};
