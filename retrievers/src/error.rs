//! The error type of kb-retrievers.

use std::path::PathBuf;

/// Everything that can go wrong while loading, splitting or retrieving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed; the path says where (the cause is
    /// its [`source`](std::error::Error::source)).
    #[error("{action} {}", path.display())]
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
    /// The knowledge base keeps its vectors elsewhere than where it was
    /// asked to look.
    #[error(
        "this knowledge base keeps its vectors in the {recorded} store, not the {requested} one; \
         open it with the settings it was built with ([vector] in kb.toml, KB_VECTOR_*), \
         or rebuild it there with `kb ingest --rebuild PATH...`"
    )]
    VectorsElsewhere {
        /// Where the manifest says the vectors are.
        recorded: String,
        /// Where they were looked for.
        requested: String,
    },
    /// Another process holds the knowledge base.
    #[error("{0}")]
    Busy(String),
    /// The knowledge base's directory may not be written by this user, or
    /// lies on a read-only file system.
    #[error(
        "{} is read-only for this user: kb needs write access to its knowledge base \
         to change it, and the vector store also to search it; ask its owner, \
         or copy it to a folder you may write",
        .0.display()
    )]
    ReadOnly(PathBuf),
    /// The disk holding the knowledge base has too little free space for a
    /// change to be written safely.
    #[error(
        "only {} MB are free on the disk holding {}; kb needs {} MB to change a \
         knowledge base safely (its vector store preallocates its files). Free some \
         space and run the command again: what was committed so far is kept",
        .available / 1_000_000,
        .dir.display(),
        .needed / 1_000_000
    )]
    DiskFull {
        /// The knowledge base's directory.
        dir: PathBuf,
        /// Bytes free there.
        available: u64,
        /// Bytes a change needs free.
        needed: u64,
    },
    /// No knowledge base exists at the path.
    #[error("no knowledge base at {}; create one with `kb ingest PATH...`", .0.display())]
    Missing(PathBuf),
    /// The vector store failed (the cause is its
    /// [`source`](std::error::Error::source)).
    #[error("vector store")]
    Store(#[from] kb_core::Error),
    /// Embedding failed.
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// A call to a vector server failed (the client's error is its
    /// [`source`](std::error::Error::source)).
    #[error("{what} on {location} failed{}", with_hint(.hint))]
    Server {
        /// The server and collection.
        location: String,
        /// What kb asked of it.
        what: &'static str,
        /// What the user can do about it, when kb can tell.
        hint: &'static str,
        /// The client's error.
        #[source]
        source: Box<crate::store::qdrant::ClientError>,
    },
}

fn with_hint(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

/// `Result` with kb-retrievers' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for kb_core::Error {
    fn from(err: Error) -> Self {
        // The whole chain: kb-core's error keeps text only.
        let mut message = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(e) = cause {
            message.push_str(": ");
            message.push_str(&e.to_string());
            cause = e.source();
        }
        kb_core::Error::Retrieval(message)
    }
}
