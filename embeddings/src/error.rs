//! The error type of kb-embeddings.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running an embedder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
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
    /// A file the model directory must contain is not there.
    #[error("{} is missing: {hint}", path.display())]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// What the file is and how to get it.
        hint: String,
    },
    /// A configuration file is not what kb expects.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The model directory holds an architecture this embedder cannot run.
    #[error("unsupported architecture {found:?} in {}: kb's local embedder runs BERT-family encoders (model_type \"bert\")", path.display())]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The model type it names.
        found: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The tensor library failed (a bad weight file, out of memory, …).
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// A vector does not have the expected length.
    #[error("embedding dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What the embedder promised.
        expected: usize,
        /// What it produced.
        got: usize,
    },
    /// A remote embedding server failed or answered something unusable.
    #[error("remote embeddings: {0}")]
    Remote(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The integer kernels refused their input, or the kernel family asked
    /// for (`KB_KERNELS`) cannot run here.
    #[error("kernels: {0}")]
    Kernel(#[from] kb_kernels::Error),
}

/// `Result` with kb-embeddings' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for kb_core::Error {
    fn from(err: Error) -> Self {
        kb_core::Error::Embedding(err.to_string())
    }
}

pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
