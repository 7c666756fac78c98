//! The [`Retriever`] trait: a query in, the most relevant chunks out.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;
use crate::document::ScoredChunk;

/// Finds the chunks most relevant to a query, best first.
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{Chunk, Result, Retriever, ScoredChunk};
///
/// /// Scores chunks by how many query words they contain.
/// struct WordOverlap(Vec<Chunk>);
///
/// #[async_trait]
/// impl Retriever for WordOverlap {
///     async fn retrieve(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>> {
///         let mut hits: Vec<ScoredChunk> = self
///             .0
///             .iter()
///             .map(|chunk| {
///                 let score = query.split_whitespace().filter(|w| chunk.text.contains(w)).count();
///                 ScoredChunk { chunk: chunk.clone(), score: score as f32 }
///             })
///             .filter(|hit| hit.score > 0.0)
///             .collect();
///         hits.sort_by(|a, b| b.score.total_cmp(&a.score));
///         hits.truncate(k);
///         Ok(hits)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let retriever = WordOverlap(vec![Chunk::new("a", 0, "rust is fast"), Chunk::new("b", 0, "tea")]);
/// let hits = retriever.retrieve("is rust fast", 5).await?;
/// assert_eq!(hits.len(), 1);
/// assert_eq!(hits[0].chunk.doc_id, "a");
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Retriever: Send + Sync {
    /// Returns at most `k` chunks for `query`, best first.
    async fn retrieve(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>>;
}

#[async_trait]
impl<T: Retriever + ?Sized> Retriever for Arc<T> {
    async fn retrieve(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>> {
        (**self).retrieve(query, k).await
    }
}

#[async_trait]
impl<T: Retriever + ?Sized> Retriever for Box<T> {
    async fn retrieve(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>> {
        (**self).retrieve(query, k).await
    }
}
