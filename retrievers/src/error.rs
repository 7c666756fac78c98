//! The error type of kb-retrievers.

use std::path::PathBuf;

/// Everything that can go wrong while loading, splitting or retrieving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed; the path says where.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An argument is not valid (a bad glob, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A search index (BM25 or vectors) failed.
    #[error("{0}")]
    Index(String),
    /// The manifest database failed.
    #[error("manifest {}: {message}", path.display())]
    Manifest {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The knowledge base was built with another embedder.
    #[error(
        "this knowledge base was built with the embedder {built_with:?} ({built_dimension} dimensions) \
         but {requested:?} ({requested_dimension} dimensions) was asked for; \
         use --embedder {built_with} to read it, or rebuild it with `kb ingest --rebuild PATH...`"
    )]
    EmbedderMismatch {
        /// The embedder the knowledge base was built with.
        built_with: String,
        /// Its dimension.
        built_dimension: usize,
        /// The embedder given now.
        requested: String,
        /// Its dimension.
        requested_dimension: usize,
    },
    /// Another process holds the knowledge base.
    #[error("{0}")]
    Busy(String),
    /// No knowledge base exists at the path.
    #[error("no knowledge base at {}; create one with `kb ingest PATH...`", .0.display())]
    Missing(PathBuf),
    /// Embedding failed.
    #[error("embedding failed: {0}")]
    Embedding(String),
}

/// `Result` with kb-retrievers' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for kb_core::Error {
    fn from(err: Error) -> Self {
        kb_core::Error::Retrieval(err.to_string())
    }
}
