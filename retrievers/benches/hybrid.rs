//! Hybrid search on a synthetic knowledge base of 100k chunks (default;
//! `--chunks N` to change): ingest throughput of both indexes, the time to
//! build the HNSW graph, and query latency (p50/p99, query embedding
//! excluded) for vector, BM25 and fused search, with the vector search before
//! the graph exists (exact) as the in-process reference.
//!
//! With `--vectors F --query-vectors Q` (both as `kb embed --json` writes
//! them: an array of `{text, embedding}`) it runs on those real texts and
//! embeddings instead; `scripts/bench-hnsw.sh` makes them from kb's docs and
//! the sample corpus.
//!
//! ```text
//! cargo bench -p kb-retrievers --bench hybrid -- [--chunks N] [--queries N]
//! cargo bench -p kb-retrievers --bench hybrid -- --vectors F.json --query-vectors Q.json
//! ```

use std::time::{Duration, Instant};

use kb_core::{Chunk, VectorStore};
use kb_retrievers::{Bm25Index, EdgeStore, Fusion, fuse};

const DIM: usize = 384;

/// Texts and their embeddings.
type Embedded = Vec<(String, Vec<f32>)>;

/// Texts and their embeddings, as `kb embed --json` writes them.
fn read_embedded(path: &str) -> Result<Embedded, Box<dyn std::error::Error>> {
    #[derive(serde::Deserialize)]
    struct Item {
        text: String,
        embedding: Vec<f32>,
    }
    let items: Vec<Item> = serde_json::from_slice(&std::fs::read(path)?)?;
    Ok(items.into_iter().map(|i| (i.text, i.embedding)).collect())
}

/// Latencies and the ids each query returned.
type Timed = (Vec<Duration>, Vec<Vec<String>>);

/// xorshift64*, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut chunks_wanted = 100_000usize;
    let mut queries = 200usize;
    let (mut real_passages, mut real_queries) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chunks" => chunks_wanted = args.next().ok_or("--chunks N")?.parse()?,
            "--queries" => queries = args.next().ok_or("--queries N")?.parse()?,
            "--vectors" => real_passages = Some(args.next().ok_or("--vectors FILE")?),
            "--query-vectors" => real_queries = Some(args.next().ok_or("--query-vectors FILE")?),
            _ => {}
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A vocabulary of English and Chinese words; 200 topic clusters.
    let english = [
        "attention",
        "cache",
        "token",
        "model",
        "vector",
        "index",
        "search",
        "layer",
        "weight",
        "gradient",
        "prompt",
        "context",
        "retrieval",
        "chunk",
        "embedding",
        "decoder",
        "encoder",
        "matrix",
        "kernel",
        "latency",
        "memory",
        "quantization",
        "sampling",
        "beam",
    ];
    let chinese = [
        "注意力",
        "缓存",
        "模型",
        "向量",
        "索引",
        "检索",
        "参数",
        "微调",
        "显存",
        "推理",
        "训练",
        "语料",
        "分词",
        "矩阵",
        "梯度",
        "上下文",
        "生成",
        "知识库",
        "召回",
        "排序",
    ];
    let topics: Vec<Vec<f32>> = (0..200)
        .map(|_| {
            let mut v: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
            normalize(&mut v);
            v
        })
        .collect();
    let mut chunks = Vec::with_capacity(chunks_wanted);
    let mut vectors = Vec::with_capacity(chunks_wanted);
    for i in 0..chunks_wanted {
        let topic = (rng.next() % 200) as usize;
        let words: Vec<&str> = (0..40)
            .map(|_| {
                if rng.next().is_multiple_of(2) {
                    english[(rng.next() as usize + topic) % english.len()]
                } else {
                    chinese[(rng.next() as usize + topic) % chinese.len()]
                }
            })
            .collect();
        let text = format!("topic{topic} {} item{i}", words.join(" "));
        chunks.push(
            Chunk::new(format!("doc{}", i / 10), (i % 10) as u32, text)
                .with_metadata("source", format!("docs/file{}.md", i / 10)),
        );
        let mut v: Vec<f32> = topics[topic]
            .iter()
            .map(|x| x + 0.35 * rng.unit() / (DIM as f32).sqrt() * 4.0)
            .collect();
        normalize(&mut v);
        vectors.push(v);
    }

    let mut real_query_vectors = None;
    if let (Some(passages), Some(questions)) = (&real_passages, &real_queries) {
        let passages = read_embedded(passages)?;
        chunks = passages
            .iter()
            .enumerate()
            .map(|(i, (text, _))| {
                Chunk::new(format!("doc{}", i / 10), (i % 10) as u32, text.clone())
                    .with_metadata("source", format!("docs/file{}.md", i / 10))
            })
            .collect();
        vectors = passages.into_iter().map(|(_, v)| v).collect();
        real_query_vectors = Some(
            read_embedded(questions)?
                .into_iter()
                .map(|(text, v)| (v, text))
                .collect::<Vec<_>>(),
        );
        println!("real embeddings: {} passages", chunks.len());
    }
    let dimension = vectors.first().map_or(DIM, Vec::len);

    let dir = tempfile::tempdir()?;
    let store = EdgeStore::open(&dir.path().join("vectors"), dimension)?;
    // The store's calls go to tokio's blocking threads, as in a knowledge base.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let bm25 = Bm25Index::open(&dir.path().join("bm25"))?;
    let started = Instant::now();
    for (c, v) in chunks.chunks(1000).zip(vectors.chunks(1000)) {
        runtime.block_on(store.upsert(c, v))?;
    }
    runtime.block_on(store.flush())?;
    let vector_ingest = started.elapsed();
    let started = Instant::now();
    for c in chunks.chunks(5000) {
        bm25.upsert(c)?;
    }
    bm25.commit()?;
    let bm25_ingest = started.elapsed();
    println!(
        "{} chunks: vectors {:.0} chunks/s, BM25 {:.0} chunks/s",
        chunks.len(),
        chunks.len() as f64 / vector_ingest.as_secs_f64(),
        chunks.len() as f64 / bm25_ingest.as_secs_f64()
    );

    let query_vectors: Vec<(Vec<f32>, String)> = real_query_vectors.unwrap_or_else(|| {
        (0..queries)
            .map(|q| {
                let topic = (rng.next() % 200) as usize;
                let mut v: Vec<f32> = topics[topic]
                    .iter()
                    .map(|x| x + 0.35 * rng.unit() / (DIM as f32).sqrt() * 4.0)
                    .collect();
                normalize(&mut v);
                let text = format!(
                    "{} {} {}",
                    english[(q + topic) % english.len()],
                    chinese[(q + topic) % chinese.len()],
                    english[(q * 7 + topic) % english.len()]
                );
                (v, text)
            })
            .collect()
    });
    let k = 10;
    let candidates = 40;
    let time_vector = |store: &EdgeStore| -> Result<Timed, Box<dyn std::error::Error>> {
        let mut times = Vec::new();
        let mut results = Vec::new();
        for (v, _) in &query_vectors {
            let t = Instant::now();
            let hits = runtime.block_on(store.search(v, k, None))?;
            times.push(t.elapsed());
            results.push(hits.into_iter().map(|h| h.chunk.id).collect());
        }
        Ok((times, results))
    };
    let (mut exact, exact_ids) = time_vector(&store)?;
    let started = Instant::now();
    runtime.block_on(store.optimize())?;
    println!("HNSW built in {:.1} s", started.elapsed().as_secs_f64());
    let (mut hnsw, hnsw_ids) = time_vector(&store)?;
    let recall: f64 = exact_ids
        .iter()
        .zip(&hnsw_ids)
        .map(|(a, b)| b.iter().filter(|id| a.contains(id)).count() as f64 / a.len().max(1) as f64)
        .sum::<f64>()
        / exact_ids.len() as f64;
    let mut bm25_times = Vec::new();
    let mut hybrid_times = Vec::new();
    for (v, text) in &query_vectors {
        let t = Instant::now();
        let _ = bm25.search(text, k, None)?;
        bm25_times.push(t.elapsed());
        let t = Instant::now();
        let dense = runtime.block_on(store.search(v, candidates, None))?;
        let sparse = bm25.search(text, candidates, None)?;
        let fused = fuse(dense, sparse, &Fusion::default(), k);
        hybrid_times.push(t.elapsed());
        assert!(!fused.is_empty());
    }
    let show = |name: &str, samples: &mut Vec<Duration>| {
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!(
            "{name:<22} p50 {:7.2} ms   p99 {:7.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        p50
    };
    let exact_p50 = show("vector, exact", &mut exact);
    let hnsw_p50 = show("vector, HNSW", &mut hnsw);
    show("BM25", &mut bm25_times);
    let hybrid_p50 = show("hybrid (40+40 → 10)", &mut hybrid_times);
    println!(
        "HNSW recall@10 vs exact {recall:.3}; HNSW is {:.1}x faster than exact; hybrid p50 target < 15 ms: {}",
        exact_p50.as_secs_f64() / hnsw_p50.as_secs_f64().max(1e-9),
        if hybrid_p50 < Duration::from_millis(15) {
            "met"
        } else {
            "not met"
        }
    );
    Ok(())
}
