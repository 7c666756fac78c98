//! [`KeywordIndex`]: what hybrid search and a knowledge base need from a
//! keyword (BM25) index. [`Bm25Index`](crate::Bm25Index) keeps one in the
//! knowledge base's directory; [`QdrantStore`](crate::QdrantStore) keeps
//! the keywords on the server, as a sparse vector on each chunk's point.

use async_trait::async_trait;
use kb_core::{Chunk, Filter, ScoredChunk};

use crate::error::Result;

/// A keyword index over chunks, tokenized by [`bm25_terms`](crate::bm25_terms)
/// (jieba for Chinese), scored by BM25.
///
/// The methods are named apart from [`VectorStore`](kb_core::VectorStore)'s,
/// as one backend may be both.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> kb_retrievers::Result<()> {
/// use kb_core::Chunk;
/// use kb_retrievers::{Bm25Index, KeywordIndex};
///
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let index = Bm25Index::open(dir.path())?;
/// let chunks = vec![
///     Chunk::new("notes.md", 0, "注意力机制让模型关注相关的词"),
///     Chunk::new("notes.md", 1, "LoRA fine-tunes a few low-rank matrices"),
/// ];
/// index.keyword_write(Vec::new(), chunks).await?;
/// let hits = index.keyword_search("什么是注意力", 1, None).await?;
/// assert_eq!(hits[0].chunk.text, "注意力机制让模型关注相关的词");
/// assert_eq!(index.keyword_count().await?, 2);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait KeywordIndex: Send + Sync + std::fmt::Debug {
    /// The `k` best chunks for `query` by BM25, among those `filter`
    /// accepts, best first.
    async fn keyword_search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>>;

    /// Removes the chunks with ids `remove`, then indexes `add` (replacing
    /// chunks of the same id); durable and searchable when it returns.
    async fn keyword_write(&self, remove: Vec<String>, add: Vec<Chunk>) -> Result<()>;

    /// Every indexed chunk's id, once per time it is indexed (for checks).
    async fn keyword_ids(&self) -> Result<Vec<String>>;

    /// Chunks indexed.
    async fn keyword_count(&self) -> Result<usize>;
}
