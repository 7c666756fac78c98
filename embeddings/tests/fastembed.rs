//! `FastEmbedder` on a real ONNX export of all-MiniLM-L6-v2 against the
//! independent reference. Needs an onnxruntime library and an ONNX model dir:
//! `ORT_DYLIB_PATH=/path/libonnxruntime.so KB_TEST_ONNX_DIR=/path/model
//! cargo test -p kb-embeddings --features fastembed --test fastembed`.
//! Without them the test prints why it skips.

#![cfg(feature = "fastembed")]

use kb_core::Embedder;
use kb_embeddings::FastEmbedder;

#[test]
fn onnx_minilm_matches_the_reference() {
    let (Some(dir), Some(_)) = (
        std::env::var_os("KB_TEST_ONNX_DIR"),
        std::env::var_os("ORT_DYLIB_PATH"),
    ) else {
        eprintln!(
            "skipped: set KB_TEST_ONNX_DIR (an ONNX export of all-MiniLM-L6-v2) and ORT_DYLIB_PATH"
        );
        return;
    };
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture");
    let items = fixture["items"].as_array().expect("items");
    let texts: Vec<&str> = items
        .iter()
        .map(|i| i["text"].as_str().expect("text"))
        .collect();
    let embedder = FastEmbedder::from_dir(dir).expect("load");
    assert_eq!(embedder.dimension(), 384);
    let vectors = futures::executor::block_on(embedder.embed_documents(&texts)).expect("embed");
    for (item, vector) in items.iter().zip(&vectors) {
        let want: Vec<f32> = item["vector"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let dot: f32 = vector.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(vector) * norm(&want));
        assert!(cosine > 0.9999, "cosine {cosine} for {:?}", item["text"]);
    }
    let err = FastEmbedder::from_dir("/nonexistent/model").unwrap_err();
    assert!(err.to_string().contains("model.onnx"), "{err}");
}
