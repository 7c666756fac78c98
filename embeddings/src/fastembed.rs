//! [`FastEmbedder`]: ONNX embedding models on disk, run by fastembed and
//! onnxruntime (feature `fastembed`).
//!
//! onnxruntime is loaded at run time: point `ORT_DYLIB_PATH` at
//! `libonnxruntime.so` (the `onnxruntime` Python wheel ships one). Nothing is
//! downloaded, at build time or at run time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fastembed::{InitOptionsUserDefined, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use kb_core::{Embedder, Worker};

use crate::Pooling;
use crate::bert::model_dir::{Usage, required};
use crate::error::{Error, IoContext, Result};

/// An embedder for an ONNX export of a sentence-embedding model: a directory
/// with `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `config.json`,
/// `special_tokens_map.json` and `tokenizer_config.json`. Pooling and prefixes
/// are read from the sentence-transformers files as for
/// [`BertEmbedder`](crate::BertEmbedder).
///
/// ```no_run
/// use kb_core::Embedder;
/// use kb_embeddings::FastEmbedder;
///
/// # async fn example() -> kb_core::Result<()> {
/// let embedder = FastEmbedder::from_dir("/models/all-MiniLM-L6-v2-onnx")?;
/// let vectors = embedder.embed_documents(&["hello"]).await?;
/// assert_eq!(vectors[0].len(), embedder.dimension());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FastEmbedder {
    model: Arc<Mutex<TextEmbedding>>,
    worker: Arc<Worker>,
    id: String,
    dimension: usize,
    query_prefix: Option<String>,
    passage_prefix: Option<String>,
}

impl std::fmt::Debug for FastEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastEmbedder")
            .field("id", &self.id)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).at("reading", path)
}

fn fastembed_error(err: impl std::fmt::Display) -> Error {
    Error::InvalidSetting(format!("fastembed: {err}"))
}

impl FastEmbedder {
    /// Loads the ONNX model in `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let onnx: PathBuf = ["model.onnx", "onnx/model.onnx"]
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| Error::MissingFile {
                path: dir.join("model.onnx"),
                hint: "an ONNX export of the model (model.onnx or onnx/model.onnx)".into(),
            })?;
        let file = |name: &str| -> Result<Vec<u8>> {
            read(&required(
                dir,
                name,
                "part of the Hugging Face tokenizer files",
            )?)
        };
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: file("tokenizer.json")?,
            config_file: file("config.json")?,
            special_tokens_map_file: file("special_tokens_map.json")?,
            tokenizer_config_file: file("tokenizer_config.json")?,
        };
        let usage = Usage::read(dir)?;
        let pooling = match usage.pooling.unwrap_or(Pooling::Mean) {
            Pooling::Mean => fastembed::Pooling::Mean,
            Pooling::Cls => fastembed::Pooling::Cls,
            Pooling::Max => {
                return Err(Error::InvalidSetting(
                    "fastembed supports mean and CLS pooling, not max".into(),
                ));
            }
        };
        let model =
            UserDefinedEmbeddingModel::new(read(&onnx)?, tokenizer_files).with_pooling(pooling);
        let mut options = InitOptionsUserDefined::default();
        if let Some(max_length) = usage.max_length {
            options = options.with_max_length(max_length);
        }
        let mut model =
            TextEmbedding::try_new_from_user_defined(model, options).map_err(fastembed_error)?;
        let probe = model
            .embed(["dimension probe"], None)
            .map_err(fastembed_error)?;
        let dimension = probe.first().map(Vec::len).unwrap_or(0);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onnx".into());
        Ok(FastEmbedder {
            model: Arc::new(Mutex::new(model)),
            worker: Arc::new(
                Worker::spawn("kb-fastembed").map_err(|e| Error::InvalidSetting(e.to_string()))?,
            ),
            id: format!("fastembed:{name}:{dimension}"),
            dimension,
            query_prefix: usage.query_prefix,
            passage_prefix: usage.passage_prefix,
        })
    }

    async fn run(&self, texts: Vec<String>) -> kb_core::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model.clone();
        let vectors = self
            .worker
            .run(move || {
                let mut model = model.lock().map_err(|_| {
                    Error::InvalidSetting("fastembed model poisoned by a panic".into())
                })?;
                model.embed(&texts, None).map_err(fastembed_error)
            })
            .await??;
        Ok(vectors)
    }
}

fn with_prefix(prefix: &Option<String>, text: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}{text}"),
        None => text.to_string(),
    }
}

#[async_trait]
impl Embedder for FastEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        let texts = texts
            .iter()
            .map(|t| with_prefix(&self.passage_prefix, t))
            .collect();
        self.run(texts).await
    }

    async fn embed_query(&self, text: &str) -> kb_core::Result<Vec<f32>> {
        let mut vectors = self
            .run(vec![with_prefix(&self.query_prefix, text)])
            .await?;
        vectors
            .pop()
            .ok_or_else(|| kb_core::Error::Embedding("no vector for the query".into()))
    }
}
