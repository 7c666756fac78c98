//! [`CrossEncoder`]: a BERT sequence classifier that reads a query and a
//! passage together and scores how well the passage answers the query — the
//! reranker kind of `cross-encoder/ms-marco-MiniLM-L-6-v2` and its kin.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{Chunk, Reranker, Worker};
use serde_json::Value;
use tokenizers::{EncodeInput, PaddingParams, Tokenizer, TruncationParams, TruncationStrategy};

use crate::bert::encoder::{Encoder, take_linear};
use crate::bert::model_dir::ModelDir;
use crate::bert::{Pooling, plan_batches, read_tensors, shape_of};
use crate::error::{Error, IoContext, Result};

/// Pairs per forward pass, at most.
const BATCH_SIZE: usize = 32;
/// Tokens per forward pass, at most.
const BATCH_TOKENS: usize = 8192;

/// A cross-encoder in a Hugging Face model directory of a
/// `BertForSequenceClassification` (`config.json`, `tokenizer.json`,
/// `model.safetensors` with a pooler and a classifier), run on the CPU by
/// kb's own BERT encoder.
///
/// Each query–passage pair is tokenized as the model was trained (`[CLS]
/// query [SEP] passage [SEP]`, the passage in token type 1, the longer of
/// the two cut first when the pair exceeds the model's positions). The score
/// is the classifier's logit; with two labels, label 1's logit minus label
/// 0's (the log-odds of "relevant").
///
/// ```no_run
/// use kb_core::{Chunk, Reranker};
/// use kb_embeddings::CrossEncoder;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let reranker = CrossEncoder::from_dir("models/ms-marco-MiniLM-L-6-v2")?;
/// let chunks = [
///     Chunk::new("a", 0, "The KV cache keeps the keys and values of past tokens."),
///     Chunk::new("b", 0, "Beam search keeps the best hypotheses."),
/// ];
/// let scores = reranker.score("What does the KV cache store?", &chunks).await?;
/// assert!(scores[0] > scores[1]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CrossEncoder {
    name: String,
    scorer: Arc<Scorer>,
    worker: Arc<Worker>,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("name", &self.name)
            .field("labels", &self.scorer.labels)
            .field("max_length", &self.scorer.max_length)
            .finish()
    }
}

/// The model and its head: `logits = classifier · tanh(pooler · h_cls)`.
struct Scorer {
    encoder: Encoder,
    tokenizer: Tokenizer,
    hidden: usize,
    max_length: usize,
    /// `hidden × hidden`, and its bias.
    pooler: (Vec<f32>, Vec<f32>),
    /// `labels × hidden`, and its bias.
    classifier: (Vec<f32>, Vec<f32>),
    labels: usize,
}

/// How many labels the classifier has: `num_labels`, else the size of
/// `id2label`, else 1.
fn labels_of(config: &Value) -> usize {
    config
        .get("num_labels")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| {
            config
                .get("id2label")
                .and_then(Value::as_object)
                .map(|m| m.len())
        })
        .unwrap_or(1)
}

impl CrossEncoder {
    /// Loads the cross-encoder in `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let model_dir = ModelDir::read(dir.as_ref())?;
        let raw: Value = serde_json::from_str(&model_dir.config_text).unwrap_or(Value::Null);
        let labels = labels_of(&raw);
        if !(1..=2).contains(&labels) {
            return Err(Error::InvalidSetting(format!(
                "{} has {labels} labels; a reranking cross-encoder has one (a relevance \
                 logit) or two (not relevant, relevant)",
                model_dir.dir.display()
            )));
        }
        let config = &model_dir.config;
        let hidden = config.hidden_size;

        let mut tokenizer =
            Tokenizer::from_file(&model_dir.tokenizer_path).map_err(|e| Error::Config {
                path: model_dir.tokenizer_path.clone(),
                message: format!("not a tokenizer.json: {e}"),
            })?;
        let max_length = config.max_position_embeddings;
        tokenizer.with_padding(None::<PaddingParams>);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;

        let weights =
            std::fs::read(&model_dir.weights_path).at("reading", &model_dir.weights_path)?;
        let mut tensors = read_tensors(&weights).map_err(|e| Error::Config {
            path: model_dir.weights_path.clone(),
            message: format!("cannot read the weights: {e}"),
        })?;
        drop(weights);
        let head = |e: Error| {
            Error::InvalidSetting(format!(
                "{e}: a cross-encoder (BertForSequenceClassification) has a pooler and a classifier"
            ))
        };
        let pooler = if tensors.contains_key("bert.pooler.dense.weight") {
            "bert.pooler.dense"
        } else {
            "pooler.dense"
        };
        let pooler = take_linear(&mut tensors, pooler, hidden, hidden).map_err(head)?;
        let classifier = take_linear(&mut tensors, "classifier", labels, hidden).map_err(head)?;
        let encoder = Encoder::from_tensors(shape_of(config), config.layer_norm_eps, tensors)
            .map_err(|e| Error::Config {
                path: model_dir.weights_path.clone(),
                message: format!("the weights do not fit config.json: {e}"),
            })?;
        Ok(CrossEncoder {
            name: format!("cross-encoder:{}", model_dir.name()),
            scorer: Arc::new(Scorer {
                encoder,
                tokenizer,
                hidden,
                max_length,
                pooler,
                classifier,
                labels,
            }),
            worker: Arc::new(
                Worker::spawn("kb-cross-encoder")
                    .map_err(|e| Error::InvalidSetting(e.to_string()))?,
            ),
        })
    }

    /// The longest pair in tokens; longer pairs are cut, the longer text
    /// first.
    pub fn max_length(&self) -> usize {
        self.scorer.max_length
    }

    /// The token ids and where the passage's segment begins, for a pair.
    pub fn pair_ids(&self, query: &str, passage: &str) -> Result<(Vec<u32>, usize)> {
        let encoding = self
            .scorer
            .tokenizer
            .encode((query, passage), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let second = second_segment(encoding.get_type_ids());
        Ok((encoding.get_ids().to_vec(), second))
    }

    /// Scores each passage against `query` on the calling thread.
    pub fn score_blocking(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        self.scorer.score(query, passages)
    }
}

/// Where token type 1 begins (the length when it never does).
fn second_segment(types: &[u32]) -> usize {
    types.iter().position(|&t| t == 1).unwrap_or(types.len())
}

impl Scorer {
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<EncodeInput> = passages.iter().map(|p| (query, *p).into()).collect();
        let encodings = self
            .tokenizer
            .encode_batch(pairs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let seconds: Vec<usize> = encodings
            .iter()
            .map(|e| second_segment(e.get_type_ids()))
            .collect();
        let mut scores = vec![0f32; passages.len()];
        for batch in plan_batches(&ids, BATCH_SIZE, BATCH_TOKENS) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
            let second: Vec<usize> = batch.iter().map(|&i| seconds[i]).collect();
            let first_tokens = self
                .encoder
                .embed_segments(&rows, &second, Pooling::Cls, false)?;
            for (i, cls) in batch.into_iter().zip(first_tokens) {
                scores[i] = self.head(&cls);
            }
        }
        Ok(scores)
    }

    /// The relevance score of a pair from its first token's hidden state.
    fn head(&self, cls: &[f32]) -> f32 {
        let h = self.hidden;
        let (weight, bias) = &self.pooler;
        let pooled: Vec<f32> = (0..h)
            .map(|o| {
                let row = &weight[o * h..(o + 1) * h];
                (bias[o] + row.iter().zip(cls).map(|(w, x)| w * x).sum::<f32>()).tanh()
            })
            .collect();
        let (weight, bias) = &self.classifier;
        let logit = |label: usize| {
            let row = &weight[label * h..(label + 1) * h];
            bias[label] + row.iter().zip(&pooled).map(|(w, x)| w * x).sum::<f32>()
        };
        match self.labels {
            1 => logit(0),
            _ => logit(1) - logit(0),
        }
    }
}

#[async_trait]
impl Reranker for CrossEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn score(&self, query: &str, chunks: &[Chunk]) -> kb_core::Result<Vec<f32>> {
        let scorer = self.scorer.clone();
        let query = query.to_string();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let scores = self
            .worker
            .run(move || {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                scorer.score(&query, &texts)
            })
            .await??;
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_num_labels_or_id2label() {
        assert_eq!(labels_of(&serde_json::json!({})), 1);
        assert_eq!(labels_of(&serde_json::json!({"num_labels": 2})), 2);
        assert_eq!(
            labels_of(&serde_json::json!({"id2label": {"0": "LABEL_0"}})),
            1
        );
        assert_eq!(second_segment(&[0, 0, 0, 1, 1]), 3);
        assert_eq!(second_segment(&[0, 0]), 2);
    }
}
