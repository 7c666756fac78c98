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
}

/// `Result` with kb-retrievers' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for kb_core::Error {
    fn from(err: Error) -> Self {
        kb_core::Error::Retrieval(err.to_string())
    }
}
