//! The real all-MiniLM-L6-v2 (fetched by `kb models fetch`) against an
//! independent numpy implementation (`tests/fixtures/minilm_reference.json`):
//! identical token ids and cosine ≥ 0.9999 for every item.

use std::path::PathBuf;
use std::sync::OnceLock;

use kb_core::Embedder;
use kb_core::models::{DEFAULT_EMBEDDER, ModelCache};
use kb_embeddings::{BertEmbedder, Error, Pooling};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    max_tokens: usize,
    items: Vec<Item>,
    cosine_checks: CosineChecks,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    token_ids: Vec<u32>,
    vector: Vec<f32>,
}

#[derive(Deserialize)]
struct CosineChecks {
    paraphrase_pairs: Vec<(usize, usize, f32)>,
    unrelated_pairs: Vec<(usize, usize, f32)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let text = include_str!("fixtures/minilm_reference.json");
        serde_json::from_str(text).expect("fixture parses")
    })
}

fn model_dir() -> PathBuf {
    ModelCache::from_env()
        .expect("model cache")
        .resolve(DEFAULT_EMBEDDER)
        .expect("the default embedder is installed (run `kb models fetch`)")
}

fn embedder() -> &'static BertEmbedder {
    static EMBEDDER: OnceLock<BertEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        BertEmbedder::builder(model_dir())
            .max_length(fixture().max_tokens)
            .build()
            .expect("load all-MiniLM-L6-v2")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn settings_come_from_the_model_directory() {
    let embedder = embedder();
    assert_eq!(embedder.pooling(), Pooling::Mean);
    assert!(embedder.normalizes());
    assert_eq!(embedder.dimension(), 384);
    assert!(
        embedder.id().starts_with("bert:all-minilm-l6-v2:mean:"),
        "{}",
        embedder.id()
    );
    // sentence_bert_config.json says 256; the fixture asks for the same.
    assert_eq!(
        BertEmbedder::from_dir(model_dir())
            .expect("load")
            .max_length(),
        256
    );
}

#[test]
fn token_ids_match_the_reference() {
    for item in &fixture().items {
        let ids = embedder().token_ids(&item.text).expect("tokenize");
        assert_eq!(ids, item.token_ids, "token ids differ for {:?}", item.text);
    }
}

#[test]
fn vectors_match_the_reference() {
    let texts: Vec<&str> = fixture().items.iter().map(|i| i.text.as_str()).collect();
    let vectors = embedder().embed_documents_blocking(&texts).expect("embed");
    let mut worst = 1.0f32;
    for (item, vector) in fixture().items.iter().zip(&vectors) {
        let similarity = cosine(vector, &item.vector);
        worst = worst.min(similarity);
        assert!(
            similarity >= 0.9999,
            "cosine {similarity} for {:?}",
            item.text
        );
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
    println!("worst cosine against the reference: {worst}");
}

#[test]
fn batched_and_single_embeddings_agree() {
    let texts: Vec<&str> = fixture().items.iter().map(|i| i.text.as_str()).collect();
    let batched = embedder().embed_documents_blocking(&texts).expect("batch");
    for (text, batch_vector) in texts.iter().zip(&batched) {
        let single = embedder()
            .embed_documents_blocking(&[text])
            .expect("single");
        let similarity = cosine(&single[0], batch_vector);
        assert!(similarity > 0.99999, "{similarity} for {text:?}");
    }
}

#[test]
fn paraphrases_rank_above_unrelated_pairs() {
    let texts: Vec<&str> = fixture().items.iter().map(|i| i.text.as_str()).collect();
    let vectors = embedder().embed_documents_blocking(&texts).expect("embed");
    let checks = &fixture().cosine_checks;
    let lowest_paraphrase = checks
        .paraphrase_pairs
        .iter()
        .map(|&(a, b, _)| cosine(&vectors[a], &vectors[b]))
        .fold(f32::MAX, f32::min);
    let highest_unrelated = checks
        .unrelated_pairs
        .iter()
        .map(|&(a, b, _)| cosine(&vectors[a], &vectors[b]))
        .fold(f32::MIN, f32::max);
    assert!(
        lowest_paraphrase > highest_unrelated,
        "{lowest_paraphrase} ≤ {highest_unrelated}"
    );
    for &(a, b, expected) in checks
        .paraphrase_pairs
        .iter()
        .chain(&checks.unrelated_pairs)
    {
        let got = cosine(&vectors[a], &vectors[b]);
        assert!(
            (got - expected).abs() < 1e-4,
            "pair ({a}, {b}): {got} vs {expected}"
        );
    }
}

#[test]
fn the_async_api_queues_on_the_worker_and_handles_edge_cases() {
    futures::executor::block_on(async {
        let embedder = embedder();
        assert!(
            embedder
                .embed_documents(&[])
                .await
                .expect("empty list")
                .is_empty()
        );
        let empty = embedder.embed_query("").await.expect("empty string");
        assert_eq!(empty.len(), 384);
        let item = &fixture().items[0];
        let query = embedder.embed_query(&item.text).await.expect("query");
        assert!(cosine(&query, &item.vector) >= 0.9999);
        let concurrent = futures::future::try_join_all(
            fixture()
                .items
                .iter()
                .take(4)
                .map(|i| embedder.embed_query(&i.text)),
        )
        .await
        .expect("concurrent queries");
        assert_eq!(concurrent.len(), 4);
    });
}

#[test]
fn prefixes_change_queries_and_passages_separately() {
    let plain = embedder().embed_query_blocking("attention").expect("plain");
    let prefixed = BertEmbedder::builder(model_dir())
        .query_prefix("query: ")
        .build()
        .expect("load");
    let query = prefixed.embed_query_blocking("attention").expect("query");
    let passage = prefixed
        .embed_documents_blocking(&["attention"])
        .expect("passage");
    assert!(
        cosine(&plain, &passage[0]) > 0.99999,
        "passages get no prefix"
    );
    assert!(cosine(&plain, &query) < 0.999, "queries get the prefix");
    assert_ne!(
        prefixed.id(),
        embedder().id(),
        "settings are part of the id"
    );
}

#[test]
fn cls_pooling_and_unnormalised_output_are_available() {
    let embedder = BertEmbedder::builder(model_dir())
        .pooling(Pooling::Cls)
        .normalize(false)
        .build()
        .expect("load");
    let vector = embedder
        .embed_query_blocking("The cat sits on the mat.")
        .expect("embed");
    let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "CLS vector should not be unit length: {norm}"
    );
}

#[test]
fn bad_model_directories_are_clear_errors() {
    let err = BertEmbedder::from_dir("/nonexistent/model").unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("kb models fetch"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let err = BertEmbedder::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    for file in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(model_dir().join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "xlm-roberta"}"#,
    )
    .expect("write");
    let err = BertEmbedder::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );

    std::fs::write(dir.path().join("config.json"), "{not json").expect("write");
    let err = BertEmbedder::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");

    // A config whose sizes do not fit the weights.
    let config = std::fs::read_to_string(model_dir().join("config.json")).expect("read");
    let wrong = config.replace("\"hidden_size\": 384", "\"hidden_size\": 512");
    assert_ne!(wrong, config);
    std::fs::write(dir.path().join("config.json"), wrong).expect("write");
    let err = BertEmbedder::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");

    std::fs::write(dir.path().join("config.json"), config).expect("write");
    std::fs::write(dir.path().join("model.safetensors"), b"truncated").expect("write");
    let err = BertEmbedder::from_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("cannot read the weights"), "{err}");
}
