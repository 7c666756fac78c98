//! The cross-encoder on a model directory laid out as Hugging Face saves a
//! `BertForSequenceClassification`: all-MiniLM-L6-v2's encoder and pooler
//! under `bert.`, plus a classifier made up here (no cross-encoder can be
//! downloaded where kb is built). Its scores are checked against candle's
//! independent BERT implementation given the same pairs and token types,
//! with the head applied by hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use kb_core::models::ModelCache;
use kb_core::{Chunk, Reranker};
use kb_embeddings::CrossEncoder;

fn minilm() -> PathBuf {
    ModelCache::from_env()
        .expect("model cache")
        .resolve("all-minilm-l6-v2")
        .expect("all-MiniLM-L6-v2 is installed (run `kb models fetch --all`)")
}

/// The classifier's weights: small, fixed, and different per dimension.
fn classifier(hidden: usize) -> (Vec<f32>, f32) {
    let weight = (0..hidden)
        .map(|i| 0.08 * (i as f32 * 0.37).sin())
        .collect();
    (weight, 0.1)
}

/// A cross-encoder directory in `dir` built from all-MiniLM-L6-v2.
fn build(dir: &Path) -> PathBuf {
    let source = minilm();
    let out = dir.join("minilm-cross");
    std::fs::create_dir_all(&out).expect("mkdir");
    let tensors = candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu)
        .expect("weights");
    let mut renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, tensor)| (format!("bert.{name}"), tensor))
        .collect();
    let hidden = renamed["bert.pooler.dense.bias"].dims1().expect("bias");
    let (weight, bias) = classifier(hidden);
    renamed.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (1, hidden), &Device::Cpu).expect("tensor"),
    );
    renamed.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![bias], 1, &Device::Cpu).expect("tensor"),
    );
    candle_core::safetensors::save(&renamed, out.join("model.safetensors")).expect("save");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).expect("config"))
            .expect("json");
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    std::fs::write(out.join("config.json"), config.to_string()).expect("config");
    std::fs::copy(source.join("tokenizer.json"), out.join("tokenizer.json")).expect("tokenizer");
    out
}

/// candle's BERT on the pair, then `classifier · tanh(pooler · h_cls)`.
fn reference(dir: &Path, ids: &[u32], second: usize) -> f32 {
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
            .expect("config");
    // SAFETY: the file is written by this test and not changed while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("weights");
    let model = BertModel::load(vb.pp("bert"), &config).expect("model");
    let n = ids.len();
    let types: Vec<u32> = (0..n).map(|i| u32::from(i >= second)).collect();
    let input = Tensor::from_vec(ids.to_vec(), (1, n), &Device::Cpu).expect("ids");
    let types = Tensor::from_vec(types, (1, n), &Device::Cpu).expect("types");
    let hidden = model.forward(&input, &types, None).expect("forward");
    let cls: Vec<f32> = hidden
        .get(0)
        .and_then(|h| h.get(0))
        .and_then(|h| h.to_vec1())
        .expect("cls");
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .expect("weights");
    let pooler_w: Vec<Vec<f32>> = weights["bert.pooler.dense.weight"].to_vec2().expect("w");
    let pooler_b: Vec<f32> = weights["bert.pooler.dense.bias"].to_vec1().expect("b");
    let pooled: Vec<f32> = pooler_w
        .iter()
        .zip(&pooler_b)
        .map(|(row, b)| (b + row.iter().zip(&cls).map(|(w, x)| w * x).sum::<f32>()).tanh())
        .collect();
    let (weight, bias) = classifier(cls.len());
    bias + weight.iter().zip(&pooled).map(|(w, x)| w * x).sum::<f32>()
}

const QUERY: &str = "What does the KV cache keep?";
const PASSAGES: [&str; 4] = [
    "The KV cache keeps the keys and values of past tokens, so each new token attends without recomputing them.",
    "Beam search keeps the best hypotheses at each step.",
    "注意力机制让模型关注输入的不同部分。",
    "Short.",
];

#[test]
fn scores_match_an_independent_bert_with_token_types() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = build(work.path());
    let reranker = CrossEncoder::from_dir(&dir).expect("load");
    assert_eq!(reranker.max_length(), 512);
    let scores = reranker.score_blocking(QUERY, &PASSAGES).expect("scores");
    for (passage, score) in PASSAGES.iter().zip(&scores) {
        let (ids, second) = reranker.pair_ids(QUERY, passage).expect("ids");
        assert_eq!(ids[0], 101, "[CLS] first");
        assert_eq!(ids[second - 1], 102, "[SEP] ends the query");
        assert_eq!(ids.last(), Some(&102), "[SEP] ends the passage");
        let expected = reference(&dir, &ids, second);
        assert!(
            (score - expected).abs() < 1e-4,
            "{passage:?}: {score} vs candle's {expected}"
        );
    }
    // Scores of a batch equal scores one at a time (no padding leaks in).
    for (passage, score) in PASSAGES.iter().zip(&scores) {
        let alone = reranker.score_blocking(QUERY, &[passage]).expect("alone")[0];
        assert!((alone - score).abs() < 1e-4, "{alone} vs {score}");
    }

    // The Reranker trait, off the caller's thread.
    let chunks: Vec<Chunk> = PASSAGES
        .iter()
        .enumerate()
        .map(|(i, p)| Chunk::new("doc", i as u32, *p))
        .collect();
    let via_trait =
        futures::executor::block_on(reranker.score(QUERY, &chunks)).expect("trait scores");
    assert_eq!(via_trait, scores);
    assert_eq!(reranker.name(), "cross-encoder:minilm-cross");

    // A pair longer than the model's positions is cut, not refused.
    let long = "tokens ".repeat(2000);
    let cut = reranker.score_blocking(QUERY, &[&long]).expect("long");
    assert!(cut[0].is_finite());
}

#[test]
fn a_directory_without_a_classifier_is_refused_clearly() {
    let err = CrossEncoder::from_dir(minilm()).expect_err("an embedder, not a cross-encoder");
    let message = err.to_string();
    assert!(
        message.contains("classifier") && message.contains("BertForSequenceClassification"),
        "{message}"
    );
    let missing = CrossEncoder::from_dir("/no/such/model").expect_err("missing");
    assert!(missing.to_string().contains("/no/such/model"), "{missing}");
}
