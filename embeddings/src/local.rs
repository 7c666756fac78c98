//! What every local embedder shares: a loaded model behind a worker thread,
//! reachable both from async code (queued) and from blocking code (direct).

use std::sync::Arc;

use kb_core::Worker;

use crate::error::{Error, Result};

/// Whether a text is a search query or a passage to be stored; models with
/// instructions or prefixes treat the two differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    Query,
    Passage,
}

/// A loaded model that turns texts into vectors on the calling thread.
pub(crate) trait Encode: Send + Sync + 'static {
    fn id(&self) -> &str;
    fn dimension(&self) -> usize;
    fn encode(&self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>>;
}

/// The methods every local embedder type offers, over its `local` field: the
/// blocking calls and the [`Embedder`](kb_core::Embedder) implementation.
macro_rules! local_embedder {
    ($ty:ty) => {
        impl $ty {
            /// Embeds passages on the calling thread.
            pub fn embed_documents_blocking(
                &self,
                texts: &[&str],
            ) -> $crate::Result<Vec<Vec<f32>>> {
                self.local
                    .blocking(texts, $crate::local::InputKind::Passage)
            }

            /// Embeds a query on the calling thread.
            pub fn embed_query_blocking(&self, text: &str) -> $crate::Result<Vec<f32>> {
                self.local
                    .blocking_one(text, $crate::local::InputKind::Query)
            }
        }

        #[async_trait::async_trait]
        impl kb_core::Embedder for $ty {
            fn id(&self) -> &str {
                $crate::local::Encode::id(&*self.local.engine)
            }

            fn dimension(&self) -> usize {
                $crate::local::Encode::dimension(&*self.local.engine)
            }

            async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
                self.local
                    .run(texts, $crate::local::InputKind::Passage)
                    .await
            }

            async fn embed_query(&self, text: &str) -> kb_core::Result<Vec<f32>> {
                self.local
                    .run_one(text, $crate::local::InputKind::Query)
                    .await
            }
        }
    };
}
pub(crate) use local_embedder;

/// A model and the worker thread its async calls queue on.
pub(crate) struct Local<E> {
    pub(crate) engine: Arc<E>,
    worker: Arc<Worker>,
}

impl<E> Clone for Local<E> {
    fn clone(&self) -> Self {
        Local {
            engine: self.engine.clone(),
            worker: self.worker.clone(),
        }
    }
}

impl<E: Encode> Local<E> {
    pub(crate) fn new(engine: E, thread: &str) -> Result<Self> {
        Ok(Local {
            engine: Arc::new(engine),
            worker: Arc::new(
                Worker::spawn(thread).map_err(|e| Error::InvalidSetting(e.to_string()))?,
            ),
        })
    }

    /// Encodes on the calling thread.
    pub(crate) fn blocking(&self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.engine.encode(texts, kind)
    }

    /// Encodes one text on the calling thread.
    pub(crate) fn blocking_one(&self, text: &str, kind: InputKind) -> Result<Vec<f32>> {
        let mut vectors = self.engine.encode(&[text], kind)?;
        vectors.pop().ok_or(Error::DimensionMismatch {
            expected: 1,
            got: 0,
        })
    }

    /// Encodes on the worker thread, without blocking the caller's runtime.
    pub(crate) async fn run(
        &self,
        texts: &[&str],
        kind: InputKind,
    ) -> kb_core::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let engine = self.engine.clone();
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let vectors = self
            .worker
            .run(move || {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                engine.encode(&texts, kind)
            })
            .await??;
        Ok(vectors)
    }

    /// Encodes one text on the worker thread.
    pub(crate) async fn run_one(&self, text: &str, kind: InputKind) -> kb_core::Result<Vec<f32>> {
        let mut vectors = self.run(&[text], kind).await?;
        vectors
            .pop()
            .ok_or_else(|| kb_core::Error::Embedding("no vector for the input".into()))
    }
}
