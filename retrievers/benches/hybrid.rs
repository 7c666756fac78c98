//! Hybrid search on a synthetic knowledge base of 100k chunks of 100 words
//! from a Zipfian vocabulary (default;
//! `--chunks N` to change): ingest throughput of both indexes, the time to
//! build the HNSW graph, and query latency (p50/p99, query embedding
//! excluded) for vector, BM25 and fused search, with the vector search before
//! the graph exists (exact) as the reference for recall.
//!
//! `--backend` picks the backends, side by side in one run: `embedded`
//! (vectors in process and BM25 in a local tantivy index, the default),
//! `qdrant` (one server on loopback, holding the vectors and the BM25
//! keywords as sparse vectors) and `cluster` (three nodes on loopback,
//! 3 shards × 2 replicas); the servers are started from `QDRANT_BIN` or
//! `qdrant` on PATH. Ingest counts the writes of both indexes. A table at
//! the end compares them.
//!
//! With `--vectors F --query-vectors Q` (both as `kb embed --json` writes
//! them: an array of `{text, embedding}`) it runs on those real texts and
//! embeddings instead; `scripts/bench-hnsw.sh` makes them from kb's docs and
//! the sample corpus.
//!
//! ```text
//! cargo bench -p kb-retrievers --bench hybrid -- [--chunks N] [--queries N]
//! cargo bench -p kb-retrievers --bench hybrid -- --backend embedded,qdrant,cluster
//! cargo bench -p kb-retrievers --bench hybrid -- --vectors F.json --query-vectors Q.json
//! ```

use std::time::{Duration, Instant};

use kb_core::{Chunk, VectorStore};
use kb_retrievers::{
    Bm25Index, EdgeStore, Fusion, KeywordIndex, QdrantOptions, QdrantStore, Setup, fuse,
};

#[path = "../tests/support/qdrant.rs"]
mod qdrant;

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
    let mut backends = vec!["embedded".to_string()];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chunks" => chunks_wanted = args.next().ok_or("--chunks N")?.parse()?,
            "--queries" => queries = args.next().ok_or("--queries N")?.parse()?,
            "--vectors" => real_passages = Some(args.next().ok_or("--vectors FILE")?),
            "--query-vectors" => real_queries = Some(args.next().ok_or("--query-vectors FILE")?),
            "--backend" => {
                backends = args
                    .next()
                    .ok_or("--backend embedded,qdrant,cluster")?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            _ => {}
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 200 topic clusters over a Zipfian vocabulary of English and Chinese
    // words (see `Vocabulary`).
    let vocabulary = Vocabulary::new();
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
        let words: Vec<&str> = (0..WORDS_PER_CHUNK)
            .map(|_| vocabulary.draw(&mut rng, topic))
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
    // The stores' calls are async, as in a knowledge base.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bm25 = Bm25Index::open(&dir.path().join("bm25"))?;
    let started = Instant::now();
    for c in chunks.chunks(5000) {
        bm25.upsert(c)?;
    }
    bm25.commit()?;
    let bm25_ingest = started.elapsed();
    println!(
        "{} chunks: BM25 {:.0} chunks/s",
        chunks.len(),
        chunks.len() as f64 / bm25_ingest.as_secs_f64()
    );

    let query_vectors: Vec<(Vec<f32>, String)> = real_query_vectors.unwrap_or_else(|| {
        (0..queries)
            .map(|_| {
                let topic = (rng.next() % 200) as usize;
                let mut v: Vec<f32> = topics[topic]
                    .iter()
                    .map(|x| x + 0.35 * rng.unit() / (DIM as f32).sqrt() * 4.0)
                    .collect();
                normalize(&mut v);
                let text = (0..3)
                    .map(|_| vocabulary.topical(&mut rng, topic))
                    .collect::<Vec<_>>()
                    .join(" ");
                (v, text)
            })
            .collect()
    });
    let mut bm25_times = Vec::new();
    for (_, text) in &query_vectors {
        let t = Instant::now();
        let _ = bm25.search(text, K, None)?;
        bm25_times.push(t.elapsed());
    }
    show("BM25", &mut bm25_times);

    let bench = Bench {
        runtime: &runtime,
        chunks: &chunks,
        vectors: &vectors,
        queries: &query_vectors,
    };
    let mut rows = Vec::new();
    for backend in &backends {
        println!("\n== {backend}");
        let row = match backend.as_str() {
            "embedded" => {
                let store = EdgeStore::open(&dir.path().join("vectors"), dimension)?;
                let keywords = Bm25Index::open(&dir.path().join("bm25-embedded"))?;
                bench.run(&store, &keywords, |store| {
                    let started = Instant::now();
                    runtime.block_on(store.optimize())?;
                    println!("HNSW built in {:.1} s", started.elapsed().as_secs_f64());
                    Ok(())
                })?
            }
            "qdrant" => {
                let server = qdrant::Server::start("the Qdrant benchmark")
                    .ok_or("no Qdrant server: set QDRANT_BIN or put `qdrant` on PATH")?;
                let store = QdrantStore::connect(
                    QdrantOptions::new(server.url()),
                    "bench",
                    dimension,
                    Setup::Create,
                )?;
                bench.run(&store, &store, |_| wait_indexed(&server))?
            }
            "cluster" => {
                let cluster = qdrant::Cluster::start("the Qdrant cluster benchmark")
                    .ok_or("no Qdrant server: set QDRANT_BIN or put `qdrant` on PATH")?;
                let store = QdrantStore::connect(
                    QdrantOptions {
                        shards: Some(3),
                        replicas: Some(2),
                        ..QdrantOptions::new(cluster.nodes[0].url())
                    },
                    "bench",
                    dimension,
                    Setup::Create,
                )?;
                bench.run(&store, &store, |_| {
                    cluster.nodes.iter().try_for_each(wait_indexed)
                })?
            }
            other => {
                return Err(
                    format!("unknown backend {other:?}: embedded, qdrant or cluster").into(),
                );
            }
        };
        rows.push((backend.clone(), row));
    }
    println!(
        "\n{} chunks, {} queries, k = {K}, hybrid = {CANDIDATES}+{CANDIDATES} candidates fused in kb",
        chunks.len(),
        query_vectors.len()
    );
    println!(
        "| backend | ingest points/s | vs embedded | vector p50 / p99 ms | BM25 p50 / p99 ms | hybrid p50 / p99 ms | recall@10 vs exact |"
    );
    println!("|---|---|---|---|---|---|---|");
    let embedded_rate = rows
        .iter()
        .find(|(b, _)| b == "embedded")
        .map(|(_, r)| r.ingest_rate);
    for (backend, row) in &rows {
        println!(
            "| {backend} | {:.0} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} |",
            row.ingest_rate,
            embedded_rate.map_or("-".into(), |e| format!("{:.2}x", row.ingest_rate / e)),
            ms(row.vector.0),
            ms(row.vector.1),
            ms(row.keyword.0),
            ms(row.keyword.1),
            ms(row.hybrid.0),
            ms(row.hybrid.1),
            row.recall,
        );
    }
    Ok(())
}

const K: usize = 10;
/// Words in a synthetic chunk: the sample corpus's chunks average 100.
const WORDS_PER_CHUNK: usize = 100;

/// A vocabulary shaped like text's: 30,000 words (English-like syllable
/// strings and two-character Chinese words, alternating) drawn with Zipf's
/// law (exponent 1), so a few function words are in every chunk and most
/// words in few. Beyond the 100 commonest, each topic favours its own words
/// (the ranks are rotated per topic), which is what BM25 finds.
struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights by rank.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    const SIZE: usize = 30_000;
    const COMMON: usize = 100;

    fn new() -> Self {
        const SYLLABLES: [&str; 16] = [
            "ka", "ro", "mi", "te", "su", "la", "no", "vi", "pe", "da", "zu", "fo", "ri", "ne",
            "bo", "gi",
        ];
        let words = (0..Self::SIZE)
            .map(|i| {
                let n = i / 2;
                if i % 2 == 0 {
                    let mut w = String::new();
                    let mut x = n + 16;
                    while x > 0 {
                        w.push_str(SYLLABLES[x % 16]);
                        x /= 16;
                    }
                    w
                } else {
                    // Two characters from the common CJK block.
                    let a = char::from_u32(0x4e00 + (n % 3000) as u32).unwrap_or('中');
                    let b = char::from_u32(0x4e00 + 3000 + (n / 3000) as u32).unwrap_or('文');
                    format!("{a}{b}")
                }
            })
            .collect();
        let mut total = 0.0;
        let cumulative = (0..Self::SIZE)
            .map(|rank| {
                total += 1.0 / (rank + 1) as f64;
                total
            })
            .collect();
        Self { words, cumulative }
    }

    /// The word at `rank` in `topic`'s ordering.
    fn word(&self, rank: usize, topic: usize) -> &str {
        let index = if rank < Self::COMMON {
            rank
        } else {
            Self::COMMON + (rank - Self::COMMON + topic * 7919) % (Self::SIZE - Self::COMMON)
        };
        &self.words[index]
    }

    /// A word of a chunk about `topic`.
    fn draw(&self, rng: &mut Rng, topic: usize) -> &str {
        let total = self.cumulative[Self::SIZE - 1];
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let rank = self.cumulative.partition_point(|&c| c < u);
        self.word(rank.min(Self::SIZE - 1), topic)
    }

    /// A query word for `topic`: one of its own, moderately common words.
    fn topical(&self, rng: &mut Rng, topic: usize) -> &str {
        let rank = Self::COMMON + (rng.next() % 400) as usize;
        self.word(rank, topic)
    }
}
const CANDIDATES: usize = 40;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn show(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!("{name:<22} p50 {:7.2} ms   p99 {:7.2} ms", ms(p50), ms(p99));
    (p50, p99)
}

/// What one backend measured.
struct Row {
    ingest_rate: f64,
    vector: (Duration, Duration),
    keyword: (Duration, Duration),
    hybrid: (Duration, Duration),
    recall: f64,
}

/// The data and the queries every backend gets.
struct Bench<'a> {
    runtime: &'a tokio::runtime::Runtime,
    chunks: &'a [Chunk],
    vectors: &'a [Vec<f32>],
    queries: &'a [(Vec<f32>, String)],
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

impl Bench<'_> {
    /// Ingests, times exact searches, lets `index` build the graph, then
    /// times graph searches and hybrid ones.
    fn run<S: VectorStore>(
        &self,
        store: &S,
        keywords: &dyn KeywordIndex,
        index: impl FnOnce(&S) -> BoxResult<()>,
    ) -> BoxResult<Row> {
        let started = Instant::now();
        for (c, v) in self.chunks.chunks(1000).zip(self.vectors.chunks(1000)) {
            self.runtime.block_on(async {
                store.upsert(c, v).await?;
                keywords.keyword_write(Vec::new(), c.to_vec()).await?;
                BoxResult::Ok(())
            })?;
        }
        self.runtime.block_on(store.flush())?;
        let ingest = started.elapsed();
        let ingest_rate = self.chunks.len() as f64 / ingest.as_secs_f64();
        println!("ingest {ingest_rate:.0} points/s");
        let (mut exact, exact_ids) = self.time_vector(store)?;
        show("vector, before the graph", &mut exact);
        index(store)?;
        let (mut graph, graph_ids) = self.time_vector(store)?;
        let vector = show("vector, HNSW", &mut graph);
        let recall: f64 = exact_ids
            .iter()
            .zip(&graph_ids)
            .map(|(a, b)| {
                b.iter().filter(|id| a.contains(id)).count() as f64 / a.len().max(1) as f64
            })
            .sum::<f64>()
            / exact_ids.len().max(1) as f64;
        let mut keyword_times = Vec::new();
        for (_, text) in self.queries {
            let t = Instant::now();
            let hits = self
                .runtime
                .block_on(keywords.keyword_search(text, K, None))?;
            keyword_times.push(t.elapsed());
            assert!(!hits.is_empty(), "no keyword hits for {text:?}");
        }
        let keyword = show("BM25 keywords", &mut keyword_times);
        let mut hybrid_times = Vec::new();
        for (v, text) in self.queries {
            let t = Instant::now();
            let (dense, sparse) = self.runtime.block_on(async {
                tokio::join!(
                    store.search(v, CANDIDATES, None),
                    keywords.keyword_search(text, CANDIDATES, None)
                )
            });
            let fused = fuse(dense?, sparse?, &Fusion::default(), K);
            hybrid_times.push(t.elapsed());
            assert!(!fused.is_empty());
        }
        let hybrid = show("hybrid (40+40 → 10)", &mut hybrid_times);
        Ok(Row {
            ingest_rate,
            vector,
            keyword,
            hybrid,
            recall,
        })
    }

    fn time_vector(&self, store: &dyn VectorStore) -> BoxResult<Timed> {
        let mut times = Vec::new();
        let mut results = Vec::new();
        for (v, _) in self.queries {
            let t = Instant::now();
            let hits = self.runtime.block_on(store.search(v, K, None))?;
            times.push(t.elapsed());
            results.push(hits.into_iter().map(|h| h.chunk.id).collect());
        }
        Ok((times, results))
    }
}

/// Waits until the server has built the graph for its collection: status
/// green, with as many vectors indexed as two seconds before (segments
/// below the server's indexing threshold stay unindexed, so the count need
/// not reach the points').
fn wait_indexed(server: &qdrant::Server) -> BoxResult<()> {
    let started = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        let info = server
            .get_json("/collections/kb")
            .ok_or("collection info")?;
        let result = &info["result"];
        let indexed = result["indexed_vectors_count"].as_u64().unwrap_or(0) as usize;
        if result["status"] != "green" || indexed != last.0 {
            last = (indexed, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            println!(
                "server's graph built in {:.1} s ({indexed} vectors indexed)",
                started.elapsed().as_secs_f64() - 2.0
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("the server did not finish indexing: {result}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
