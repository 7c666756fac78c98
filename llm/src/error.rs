//! The errors of the local engine.

use std::path::PathBuf;

/// What can go wrong loading or running a local model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The model file could not be opened or read.
    #[error("reading model {}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF file, or it is truncated or corrupt.
    #[error("{} is not a valid GGUF file: {message}", path.display())]
    Corrupt {
        /// The model file.
        path: PathBuf,
        /// What the reader found.
        message: String,
    },
    /// The GGUF declares an architecture this engine does not run.
    #[error(
        "model architecture {architecture:?} is not supported (supported: llama, mistral, qwen2, qwen3, gemma3)"
    )]
    UnsupportedArchitecture {
        /// `general.architecture` from the file.
        architecture: String,
    },
    /// A metadata key the model needs is missing or has the wrong type.
    #[error("the GGUF metadata key {key:?} is missing or invalid: {message}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the architecture needs is missing or has the wrong shape.
    #[error("tensor {name:?}: {message}")]
    Tensor {
        /// The tensor's name in the GGUF.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template does not parse or failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt does not fit in the model's context window.
    #[error(
        "the prompt is {prompt} tokens but the model's context window is {context} tokens; \
         shorten the prompt (fewer retrieved chunks, a shorter history) or use a model with a larger context"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt: usize,
        /// The context window.
        context: usize,
    },
    /// The generation options are invalid.
    #[error("invalid generation options: {0}")]
    Options(String),
    /// The thread pool could not be started.
    #[error("could not start the inference threads: {0}")]
    Threads(String),

    /// The device (a GPU through candle) failed or is not available.
    #[error("device: {0}")]
    Device(String),
    /// The CPU kernels refused their input, or the kernel family asked for
    /// (`KB_KERNELS`) cannot run here.
    #[error("kernels: {0}")]
    Kernel(#[from] kb_kernels::Error),
}

impl LlmError {
    pub(crate) fn metadata(key: &str, message: impl Into<String>) -> Self {
        LlmError::Metadata {
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn tensor(name: &str, message: impl Into<String>) -> Self {
        LlmError::Tensor {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl From<LlmError> for kb_core::Error {
    fn from(e: LlmError) -> Self {
        match e {
            LlmError::Options(message) => kb_core::Error::InvalidInput(message),
            other => kb_core::Error::Model(other.to_string()),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;

/// candle's errors arise on the device path ([`crate::device`]).
impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Device(e.to_string())
    }
}
