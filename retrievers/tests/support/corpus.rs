//! A small corpus of real file kinds and a deterministic embedder, for the
//! tests of the knowledge base's control flow.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use kb_core::Embedder;
use kb_retrievers::{IngestOptions, IngestReport, KnowledgeBase, Progress};

/// Bag-of-bytes vectors: deterministic, fast, and similar for similar texts.
pub struct ByteEmbedder {
    pub id: &'static str,
    pub dimension: usize,
}

#[async_trait]
impl Embedder for ByteEmbedder {
    fn id(&self) -> &str {
        self.id
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01f32; self.dimension];
                for b in t.bytes() {
                    v[b as usize % self.dimension] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

pub fn embedder() -> Arc<dyn Embedder> {
    Arc::new(ByteEmbedder {
        id: "bytes-64",
        dimension: 64,
    })
}

pub fn write(dir: &Path, name: &str, text: &[u8]) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

pub fn corpus(dir: &Path) {
    write(
        dir,
        "guide.md",
        "# Guide\n\n## Install\n\nRun the installer. 安装完成后重启。\n\n## Use\n\nAsk questions about your documents.\n".as_bytes(),
    );
    write(
        dir,
        "notes/attention.txt",
        "注意力机制让模型关注输入的不同部分。多头注意力把表示分成多个子空间。".as_bytes(),
    );
    let (gbk, _, _) = encoding_rs::GBK.encode("低秩适配 LoRA 通过低秩矩阵减少需要训练的参数。");
    write(dir, "notes/lora-gbk.txt", &gbk);
    write(
        dir,
        "page.html",
        b"<html><head><title>KV cache</title></head><body><h1>KV cache</h1><p>The KV cache keeps keys and values of past tokens.</p></body></html>",
    );
    write(
        dir,
        "faq.jsonl",
        "{\"text\": \"Beam search keeps the n best hypotheses.\"}\n{\"text\": \"Top-p sampling keeps the nucleus.\"}\n".as_bytes(),
    );
    write(dir, "binary.bin", &[0u8, 1, 2, 3]);
    write(dir, "broken.json", b"{ not json");
}

pub async fn ingest(kb: &KnowledgeBase, path: &Path, prune: bool) -> IngestReport {
    let options = IngestOptions {
        prune,
        ..IngestOptions::default()
    };
    let mut progress = |_: Progress| {};
    kb.ingest(&[path.to_path_buf()], &options, &mut progress)
        .await
        .expect("ingest")
}

pub async fn assert_consistent(kb: &KnowledgeBase) {
    let stats = kb.stats().await.expect("stats");
    assert_eq!(stats.chunks, stats.vectors, "{stats:?}");
    assert_eq!(stats.chunks, stats.bm25_chunks, "{stats:?}");
    let check = kb.check().await.expect("check");
    assert!(check.is_consistent() && !check.interrupted, "{check:?}");
    assert_eq!(check.chunks, stats.chunks);
}
