//! [`open`]: a chat model from one string — a server URL, a GGUF path or a
//! catalog name — as the CLI's `--llm` and the examples' `--model` take it.

use std::sync::Arc;

use kb_core::ChatModel;
use kb_core::models::ModelCache;

use crate::engine::{GgufModel, LoadOptions};
use crate::local::LocalLlm;

/// Whether `spec` names a remote OpenAI-compatible server (`http://…` or
/// `https://…`).
pub fn is_remote(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// The remote chat model `spec` names: `URL` or `URL#MODEL` (the model name
/// sent, `default` when left out). The API key comes from `KB_API_KEY` or
/// else `OPENAI_API_KEY`.
#[cfg(feature = "remote")]
pub fn remote(spec: &str) -> kb_core::Result<crate::OpenAiChat> {
    let (url, model) = spec.split_once('#').unwrap_or((spec, "default"));
    let key = std::env::var("KB_API_KEY")
        .ok()
        .or_else(|| std::env::var("OPENAI_API_KEY").ok());
    crate::OpenAiChat::builder(url, model).api_key(key).build()
}

/// Opens the chat model `spec` names: a server URL (see [`remote`]), a GGUF
/// file's path, or a model name from the catalog installed in `cache`
/// (`kb models fetch`). Loading a local model blocks: call it before
/// serving or on a blocking thread.
///
/// ```no_run
/// # fn demo() -> kb_core::Result<()> {
/// use kb_core::models::ModelCache;
/// let cache = ModelCache::from_env()?;
/// let options = kb_llm::LoadOptions::default();
/// let model = kb_llm::open("smollm2-135m-instruct", &cache, &options)?;
/// let remote = kb_llm::open("http://localhost:8080/v1#qwen2.5", &cache, &options)?;
/// # Ok(())
/// # }
/// ```
pub fn open(
    spec: &str,
    cache: &ModelCache,
    options: &LoadOptions,
) -> kb_core::Result<Arc<dyn ChatModel>> {
    if is_remote(spec) {
        #[cfg(feature = "remote")]
        return Ok(Arc::new(remote(spec)?));
        #[cfg(not(feature = "remote"))]
        return Err(kb_core::Error::Unsupported(
            "remote models need kb-llm's `remote` feature".into(),
        ));
    }
    let path = cache.resolve(spec)?;
    let model = GgufModel::load(&path, options)?;
    Ok(Arc::new(LocalLlm::new(model)?))
}
