//! The [`Embedder`] trait: text in, vectors out.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;

/// Turns text into fixed-size vectors.
///
/// Implement [`embed_documents`](Embedder::embed_documents) (a batch of passages);
/// [`embed_query`](Embedder::embed_query) defaults to a batch of one, and models with
/// query instructions or prefixes (BGE, E5) override it.
///
/// ```
/// use async_trait::async_trait;
/// use kb_core::{Embedder, Result};
///
/// /// A toy embedder: counts of vowels and of other characters.
/// struct Vowels;
///
/// #[async_trait]
/// impl Embedder for Vowels {
///     fn id(&self) -> &str {
///         "vowels-v1"
///     }
///     fn dimension(&self) -> usize {
///         2
///     }
///     async fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
///         Ok(texts
///             .iter()
///             .map(|t| {
///                 let vowels = t.chars().filter(|c| "aeiou".contains(*c)).count() as f32;
///                 vec![vowels, t.chars().count() as f32 - vowels]
///             })
///             .collect())
///     }
/// }
///
/// # futures::executor::block_on(async {
/// assert_eq!(Vowels.embed_query("kb").await?, vec![0.0, 2.0]);
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Embedder: Send + Sync {
    /// A stable identifier of the model and its settings (pooling, prefixes,
    /// normalisation). A knowledge base records it and refuses to mix vectors of
    /// different embedders.
    fn id(&self) -> &str;

    /// The length of every vector this embedder returns.
    fn dimension(&self) -> usize;

    /// Embeds passages to be stored, one vector per text, in order.
    async fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    /// Embeds a search query.
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut vectors = self.embed_documents(&[text]).await?;
        vectors
            .pop()
            .ok_or_else(|| crate::Error::Embedding("the embedder returned no vector".into()))
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Arc<T> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn dimension(&self) -> usize {
        (**self).dimension()
    }
    async fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        (**self).embed_query(text).await
    }
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Box<T> {
    fn id(&self) -> &str {
        (**self).id()
    }
    fn dimension(&self) -> usize {
        (**self).dimension()
    }
    async fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        (**self).embed_query(text).await
    }
}
