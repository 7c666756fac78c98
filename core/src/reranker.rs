//! The [`Reranker`] trait: a second, finer look at a retriever's best hits.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;
use crate::document::Chunk;

/// Scores how well each candidate chunk answers a query, so that the best of
/// a retriever's hits can be put in a better order. Rerankers are slower and
/// sharper than retrievers: they read the query and the passage together
/// (an LLM asked "does this answer it?", a cross-encoder).
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{Chunk, Reranker, Result};
///
/// /// Prefers passages that contain the whole query.
/// struct Contains;
///
/// #[async_trait]
/// impl Reranker for Contains {
///     fn name(&self) -> &str {
///         "contains"
///     }
///     async fn score(&self, query: &str, chunks: &[Chunk]) -> Result<Vec<f32>> {
///         Ok(chunks.iter().map(|c| f32::from(u8::from(c.text.contains(query)))).collect())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let chunks = [Chunk::new("a", 0, "tea and cake"), Chunk::new("b", 0, "rust is fast")];
/// let scores = Contains.score("rust", &chunks).await?;
/// assert_eq!(scores, [0.0, 1.0]);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Reranker: Send + Sync {
    /// A short name for logs and `--explain` (`llm:smollm2-135m-instruct`).
    fn name(&self) -> &str;

    /// One score per chunk, in the order given; higher is more relevant.
    /// Scores are only comparable within one call.
    async fn score(&self, query: &str, chunks: &[Chunk]) -> Result<Vec<f32>>;
}

#[async_trait]
impl<T: Reranker + ?Sized> Reranker for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn score(&self, query: &str, chunks: &[Chunk]) -> Result<Vec<f32>> {
        (**self).score(query, chunks).await
    }
}
