//! [`BertEmbedder`]: a BERT-family sentence embedder on candle.

mod cross;
pub(crate) mod encoder;
pub(crate) mod model_dir;
mod pooling;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

pub use cross::CrossEncoder;
pub use pooling::Pooling;

use crate::error::{Error, IoContext, Result};
use crate::local::{Encode, InputKind, Local, local_embedder};
use encoder::{Encoder, Shape, Tensors, Weights};
use model_dir::ModelDir;

/// Sequences per forward pass, at most.
const DEFAULT_BATCH_SIZE: usize = 32;
/// Padded tokens per forward pass, at most (sequences × longest length).
const DEFAULT_BATCH_TOKENS: usize = 8192;

/// The device a model runs on when none is chosen: the first CUDA GPU when kb
/// is built with the `cuda` feature and one is present, otherwise the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = Device::new_cuda(0) {
        return device;
    }
    Device::Cpu
}

/// A sentence embedder for BERT-family encoders (all-MiniLM, BGE, E5, …) in a
/// Hugging Face model directory (`config.json`, `tokenizer.json`,
/// `model.safetensors`).
///
/// Pooling, normalisation, maximum length and query/passage prefixes are read
/// from the sentence-transformers files in the directory (`modules.json`,
/// `1_Pooling/config.json`, `sentence_bert_config.json`,
/// `config_sentence_transformers.json`) and can be overridden on the
/// [builder](BertEmbedder::builder). Inputs are sorted by length and batched with
/// padding to the longest input of each batch only.
///
/// The model runs on its own thread: the async [`Embedder`](kb_core::Embedder) methods queue work
/// there and never block the runtime; the `*_blocking` methods run on the
/// caller's thread.
///
/// ```no_run
/// use kb_core::Embedder;
/// use kb_embeddings::{BertEmbedder, Pooling};
///
/// # async fn example() -> kb_core::Result<()> {
/// // BGE-zh wants CLS pooling and an instruction before queries.
/// let embedder = BertEmbedder::builder("/models/bge-small-zh-v1.5")
///     .pooling(Pooling::Cls)
///     .query_prefix("为这个句子生成表示以用于检索相关文章：")
///     .build()?;
/// let vectors = embedder.embed_documents(&["注意力机制", "KV 缓存"]).await?;
/// let query = embedder.embed_query("什么是注意力？").await?;
/// assert_eq!(query.len(), embedder.dimension());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BertEmbedder {
    local: Local<Engine>,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = &self.local.engine;
        f.debug_struct("BertEmbedder")
            .field("id", &engine.id)
            .field("dir", &engine.dir)
            .field("pooling", &engine.pooling)
            .field("normalize", &engine.normalize)
            .field("max_length", &engine.max_length)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BertEmbedder`]; every setting defaults to what the model
/// directory says, then to the value given on each setter.
#[derive(Debug, Clone)]
pub struct BertEmbedderBuilder {
    dir: PathBuf,
    pooling: Option<Pooling>,
    normalize: Option<bool>,
    max_length: Option<usize>,
    query_prefix: Option<String>,
    passage_prefix: Option<String>,
    batch_size: usize,
    batch_tokens: usize,
    device: Option<Device>,
}

impl BertEmbedderBuilder {
    /// Pooling over token vectors; default: the directory's pooling config,
    /// else [`Pooling::Mean`].
    pub fn pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// L2-normalise vectors; default: whether the directory lists a Normalize
    /// module, else `true`.
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = Some(normalize);
        self
    }

    /// Longest input in tokens, special tokens included; longer inputs are
    /// truncated. Default: `max_seq_length` of `sentence_bert_config.json`, else
    /// the model's `max_position_embeddings`. Never more than the latter.
    pub fn max_length(mut self, tokens: usize) -> Self {
        self.max_length = Some(tokens);
        self
    }

    /// Text put before every query (BGE's instruction, E5's `"query: "`);
    /// default: the directory's `prompts.query`, else none.
    pub fn query_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.query_prefix = Some(prefix.into());
        self
    }

    /// Text put before every passage (E5's `"passage: "`); default: the
    /// directory's `prompts.passage`, else none.
    pub fn passage_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.passage_prefix = Some(prefix.into());
        self
    }

    /// Most sequences in one forward pass; default 32.
    pub fn batch_size(mut self, sequences: usize) -> Self {
        self.batch_size = sequences;
        self
    }

    /// Most padded tokens (sequences × longest) in one forward pass; default 8192.
    pub fn batch_tokens(mut self, tokens: usize) -> Self {
        self.batch_tokens = tokens;
        self
    }

    /// The device to run on; default [`default_device`].
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Loads the tokenizer and the weights.
    pub fn build(self) -> Result<BertEmbedder> {
        if self.batch_size == 0 || self.batch_tokens == 0 {
            return Err(Error::InvalidSetting(
                "batch_size and batch_tokens must be at least 1".into(),
            ));
        }
        let model_dir = ModelDir::read(&self.dir)?;
        let position_limit = model_dir.config.max_position_embeddings;
        let max_length = self
            .max_length
            .or(model_dir.usage.max_length)
            .unwrap_or(position_limit)
            .min(position_limit);
        if max_length < 2 {
            return Err(Error::InvalidSetting(format!(
                "max_length must leave room for the special tokens, got {max_length}"
            )));
        }
        let pooling = self
            .pooling
            .or(model_dir.usage.pooling)
            .unwrap_or(Pooling::Mean);
        let normalize = self.normalize.or(model_dir.usage.normalize).unwrap_or(true);
        let query_prefix = self.query_prefix.or(model_dir.usage.query_prefix.clone());
        let passage_prefix = self
            .passage_prefix
            .or(model_dir.usage.passage_prefix.clone());

        let tokenizer_bytes =
            std::fs::read(&model_dir.tokenizer_path).at("reading", &model_dir.tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes).map_err(|e| Error::Config {
            path: model_dir.tokenizer_path.clone(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
        tokenizer.with_padding(None::<PaddingParams>);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;

        let device = self.device.unwrap_or_else(default_device);
        let weights =
            std::fs::read(&model_dir.weights_path).at("reading", &model_dir.weights_path)?;
        let weights_len = weights.len();
        let backend = Backend::load(&model_dir, weights, &device)?;

        let settings = format!(
            "{pooling:?}|{normalize}|{max_length}|{query_prefix:?}|{passage_prefix:?}|{weights_len}"
        );
        let mut hasher = Sha256::new();
        hasher.update(model_dir.config_text.as_bytes());
        hasher.update(&tokenizer_bytes);
        hasher.update(settings.as_bytes());
        let digest: String = hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = format!("bert:{}:{}:{digest}", model_dir.name(), pooling.as_str());

        tracing::info!(%id, ?device, max_length, normalize, "loaded BERT embedder");
        let engine = Engine {
            id,
            dir: model_dir.dir,
            backend,
            tokenizer,
            dimension: model_dir.config.hidden_size,
            pad_id: model_dir.config.pad_token_id as u32,
            pooling,
            normalize,
            max_length,
            query_prefix,
            passage_prefix,
            batch_size: self.batch_size,
            batch_tokens: self.batch_tokens,
        };
        Ok(BertEmbedder {
            local: Local::new(engine, "kb-embedder")?,
        })
    }
}

impl BertEmbedder {
    /// A builder for the model directory `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> BertEmbedderBuilder {
        BertEmbedderBuilder {
            dir: dir.as_ref().to_path_buf(),
            pooling: None,
            normalize: None,
            max_length: None,
            query_prefix: None,
            passage_prefix: None,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_tokens: DEFAULT_BATCH_TOKENS,
            device: None,
        }
    }

    /// The model in `dir` with the settings the directory gives.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::builder(dir).build()
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.local.engine.pooling
    }

    /// Whether vectors are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.local.engine.normalize
    }

    /// The longest input in tokens; longer inputs are truncated.
    pub fn max_length(&self) -> usize {
        self.local.engine.max_length
    }

    /// The token ids the model sees for `text` (special tokens included,
    /// truncated to [`max_length`](Self::max_length), no prefix added).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .local
            .engine
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }
}

local_embedder!(BertEmbedder);

/// The loaded model and everything needed to run it; shared by the worker
/// thread and blocking callers.
struct Engine {
    id: String,
    dir: PathBuf,
    backend: Backend,
    tokenizer: Tokenizer,
    dimension: usize,
    pad_id: u32,
    pooling: Pooling,
    normalize: bool,
    max_length: usize,
    query_prefix: Option<String>,
    passage_prefix: Option<String>,
    batch_size: usize,
    batch_tokens: usize,
}

impl Encode for Engine {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn encode(&self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>> {
        let prefix = match kind {
            InputKind::Query => self.query_prefix.as_deref(),
            InputKind::Passage => self.passage_prefix.as_deref(),
        };
        self.embed(texts, prefix)
    }
}

impl Engine {
    fn embed(&self, texts: &[&str], prefix: Option<&str>) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| match prefix {
                Some(prefix) => format!("{prefix}{t}"),
                None => t.to_string(),
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();

        let mut vectors = vec![Vec::new(); ids.len()];
        for batch in plan_batches(&ids, self.batch_size, self.batch_tokens) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
            for (i, vector) in batch.into_iter().zip(self.forward(&rows)?) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// One forward pass over `rows`.
    fn forward(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let vectors = match &self.backend {
            Backend::Native(encoder) => encoder.embed(rows, self.pooling, self.normalize)?,
            Backend::Candle(model, device) => candle_forward(
                model,
                device,
                rows,
                self.pad_id,
                self.pooling,
                self.normalize,
            )?,
        };
        if let Some(bad) = vectors.iter().find(|v| v.len() != self.dimension) {
            return Err(Error::DimensionMismatch {
                expected: self.dimension,
                got: bad.len(),
            });
        }
        Ok(vectors)
    }
}

/// What runs the encoder: kb's own CPU encoder, or candle's BERT on a GPU.
enum Backend {
    Native(Encoder),
    Candle(BertModel, Device),
}

impl Backend {
    fn load(model_dir: &ModelDir, weights: Vec<u8>, device: &Device) -> Result<Self> {
        let path = &model_dir.weights_path;
        let unreadable = |e: candle_core::Error| Error::Config {
            path: path.clone(),
            message: format!("cannot read the weights: {e}"),
        };
        let misfit = |e: String| Error::Config {
            path: path.clone(),
            message: format!("the weights do not fit config.json: {e}"),
        };
        let config = &model_dir.config;
        if device.is_cpu() {
            let plain = read_tensors(&weights).map_err(unreadable)?;
            drop(weights);
            let encoder = Encoder::from_tensors(shape_of(config), config.layer_norm_eps, plain)
                .map_err(|e| misfit(e.to_string()))?;
            Ok(Backend::Native(encoder))
        } else {
            let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)
                .map_err(unreadable)?;
            let model = BertModel::load(vb, config).map_err(|e| misfit(e.to_string()))?;
            Ok(Backend::Candle(model, device.clone()))
        }
    }
}

/// Every tensor of a safetensors file, as f32.
pub(crate) fn read_tensors(weights: &[u8]) -> candle_core::Result<Tensors> {
    let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)?;
    let mut plain = Tensors::new();
    for (name, tensor) in tensors {
        let data = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        plain.insert(name, Weights::F32(data));
    }
    Ok(plain)
}

/// The encoder's shape as a BERT config gives it.
pub(crate) fn shape_of(config: &candle_transformers::models::bert::Config) -> Shape {
    Shape {
        vocab: config.vocab_size,
        hidden: config.hidden_size,
        heads: config.num_attention_heads,
        intermediate: config.intermediate_size,
        layers: config.num_hidden_layers,
        positions: config.max_position_embeddings,
        type_vocab: config.type_vocab_size,
    }
}

/// A forward pass through candle's BERT, rows padded to the longest.
fn candle_forward(
    model: &BertModel,
    device: &Device,
    rows: &[&[u32]],
    pad_id: u32,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>> {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * longest);
    let mut mask = Vec::with_capacity(rows.len() * longest);
    for row in rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(pad_id, longest - row.len()));
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
    }
    let shape = (rows.len(), longest);
    let ids = Tensor::from_vec(ids, shape, device)?;
    let mask = Tensor::from_vec(mask, shape, device)?;
    let token_types = ids.zeros_like()?;
    let hidden = model.forward(&ids, &token_types, Some(&mask))?;
    let pooled = pooling.pool(&hidden, &mask)?;
    let pooled = if normalize {
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        pooled.broadcast_div(&norm)?
    } else {
        pooled
    };
    Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Groups input indices into batches of similar length, longest first: at most
/// `batch_size` sequences and `batch_tokens` padded tokens per batch (a single
/// sequence longer than that still gets a batch of its own).
pub(crate) fn plan_batches(
    ids: &[&[u32]],
    batch_size: usize,
    batch_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        let fits = batches.last().is_some_and(|batch| {
            // Sorted longest first: the batch's first row sets its padded length.
            let longest = ids[batch[0]].len();
            batch.len() < batch_size && longest * (batch.len() + 1) <= batch_tokens
        });
        match batches.last_mut() {
            Some(batch) if fits => batch.push(i),
            _ => batches.push(vec![i]),
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_group_similar_lengths_within_limits() {
        let rows: Vec<Vec<u32>> = [3, 50, 4, 49, 5, 200].iter().map(|&n| vec![0; n]).collect();
        let ids: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let batches = plan_batches(&ids, 2, 1000);
        assert_eq!(batches, vec![vec![5, 1], vec![3, 4], vec![2, 0]]);
        let batches = plan_batches(&ids, 32, 120);
        // 200 alone (over budget), then 50+49 (100 ≤ 120), then the short ones.
        assert_eq!(batches, vec![vec![5], vec![1, 3], vec![4, 2, 0]]);
        assert!(plan_batches(&[], 4, 100).is_empty());
    }
}
