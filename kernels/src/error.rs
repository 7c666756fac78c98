//! [`Error`]: what the kernels refuse.

/// Why a kernel family or a weight matrix was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `KB_KERNELS` (or a setting) named no kernel family.
    #[error("unknown kernel family {value:?}: use auto, avx512-vnni, avx2 or scalar")]
    UnknownIsa {
        /// What was asked for.
        value: String,
    },
    /// A kernel family this processor cannot run was asked for.
    #[error("kernel family {asked} needs instructions this processor lacks; it runs {available}")]
    UnsupportedIsa {
        /// What was asked for.
        asked: &'static str,
        /// The families this processor runs, best first.
        available: String,
    },
    /// A weight type without a kernel here.
    #[error("weights of type {dtype} have no integer kernel")]
    UnsupportedType {
        /// ggml's name of the type.
        dtype: String,
    },
    /// Sizes that do not fit together.
    #[error("{0}")]
    Shape(String),
    /// Reading weights failed.
    #[error("reading weights: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
