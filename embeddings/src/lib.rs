//! Embedders: text in, vectors out.
//!
//! # Core concepts
//! - [`BertEmbedder`]: a BERT-family encoder (all-MiniLM, BGE, E5, …) run
//!   locally on candle, with mean, CLS or max [`Pooling`], optional L2
//!   normalisation, query/passage prefixes, and length-sorted batches padded only
//!   to their longest input.
//! - `OpenAiEmbeddings` (feature `remote`, on by default): any server that
//!   speaks OpenAI's `/v1/embeddings`.
//! - `FastEmbedder` (feature `fastembed`): ONNX models on disk through
//!   fastembed, with onnxruntime loaded at run time.
//! - Every embedder implements [`kb_core::Embedder`].
//!
//! ```no_run
//! use kb_core::Embedder;
//! use kb_embeddings::BertEmbedder;
//!
//! # async fn example() -> kb_core::Result<()> {
//! let embedder = BertEmbedder::from_dir("/models/all-minilm-l6-v2")?;
//! let vectors = embedder.embed_documents(&["The cat sits on the mat."]).await?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok(())
//! # }
//! ```

mod bert;
mod error;
#[cfg(feature = "fastembed")]
mod fastembed;
#[cfg(feature = "remote")]
mod openai;

pub use bert::{BertEmbedder, BertEmbedderBuilder, Pooling, default_device};
pub use candle_core::Device;
pub use error::{Error, Result};
#[cfg(feature = "fastembed")]
pub use fastembed::FastEmbedder;
#[cfg(feature = "remote")]
pub use openai::{OpenAiEmbeddings, OpenAiEmbeddingsBuilder};
