//! The vectors on a real Qdrant server: the server store answers as the
//! embedded one does, a knowledge base ingests into it and converges after
//! the server is killed mid-ingest, and a wrong API key, a collection of
//! another embedder and a server that never answers fail clearly.

mod support;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kb_core::{Chunk, Embedder, Filter, Unit, VectorStore};
use kb_retrievers::{
    Access, EdgeStore, Error, IngestOptions, KnowledgeBase, Progress, QdrantOptions, QdrantStore,
    SearchMode, Setup, VectorBackend,
};
use support::corpus::{assert_consistent, corpus, embedder, ingest, write};
use support::qdrant::Server;

/// A deterministic unit vector of `dimension` from `seed`.
fn vector(seed: u64, dimension: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dimension)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn options(server: &Server, collection: &str) -> QdrantOptions {
    QdrantOptions {
        collection: collection.into(),
        ..QdrantOptions::new(server.url())
    }
}

fn ids(hits: &[kb_core::ScoredChunk]) -> Vec<String> {
    hits.iter().map(|h| h.chunk.id.clone()).collect()
}

#[tokio::test]
async fn the_server_store_answers_as_the_embedded_store_does() {
    let Some(server) = Server::start("the_server_store_answers_as_the_embedded_store_does") else {
        return;
    };
    const DIM: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let edge = EdgeStore::open(dir.path(), DIM).expect("edge");
    let remote = QdrantStore::connect(options(&server, "parity"), "seeded-16", DIM, Setup::Create)
        .expect("connect");
    let sources = ["a.md", "b.md", "c.md"];
    let chunks: Vec<Chunk> = (0..300u32)
        .map(|i| {
            Chunk::new(format!("doc{}", i % 40), i, format!("text {i}"))
                .with_metadata("source", sources[i as usize % 3])
                .with_metadata("year", 2020 + (i % 4) as i64)
        })
        .collect();
    let vectors: Vec<Vec<f32>> = (0..chunks.len() as u64).map(|i| vector(i, DIM)).collect();
    let units: Vec<Unit<'_>> = chunks
        .iter()
        .step_by(7)
        .enumerate()
        .map(|(n, chunk)| Unit {
            chunk,
            n,
            text: "a sentence of it",
        })
        .collect();
    let unit_vectors: Vec<Vec<f32>> = (0..units.len() as u64)
        .map(|i| vector(10_000 + i, DIM))
        .collect();
    for store in [&edge as &dyn VectorStore, &remote] {
        store.upsert(&chunks, &vectors).await.expect("upsert");
        store
            .upsert_units(&units, &unit_vectors)
            .await
            .expect("units");
        // Writing the same points again changes nothing.
        store
            .upsert(&chunks[..10], &vectors[..10])
            .await
            .expect("again");
    }
    assert_eq!(remote.counts().await.expect("counts"), (300, units.len()));
    assert_eq!(
        edge.counts().await.expect("counts"),
        remote.counts().await.expect("counts")
    );
    let sorted = |mut ids: kb_core::StoredIds| {
        ids.chunks.sort();
        ids.units.sort();
        ids
    };
    assert_eq!(
        sorted(edge.ids().await.expect("ids")),
        sorted(remote.ids().await.expect("ids"))
    );

    let filters: Vec<Option<Filter>> = vec![
        None,
        Some("source=b.md".parse().expect("filter")),
        Some("source=a.md|c.md, year!=2021".parse().expect("filter")),
        Some("year=2022|2023".parse().expect("filter")),
    ];
    for q in 0..12u64 {
        let query = vector(50_000 + q, DIM);
        for filter in &filters {
            let embedded = edge.search(&query, 8, filter.as_ref()).await.expect("edge");
            let served = remote
                .search(&query, 8, filter.as_ref())
                .await
                .expect("remote");
            assert_eq!(ids(&embedded), ids(&served), "query {q}, filter {filter:?}");
            for (a, b) in embedded.iter().zip(&served) {
                assert!(
                    (a.score - b.score).abs() < 1e-4,
                    "{} vs {}",
                    a.score,
                    b.score
                );
                assert_eq!(a.chunk, b.chunk);
            }
        }
    }

    let gone: Vec<String> = chunks.iter().take(21).map(|c| c.id.clone()).collect();
    edge.delete(&gone).await.expect("delete");
    remote.delete(&gone).await.expect("delete");
    assert_eq!(
        edge.counts().await.expect("counts"),
        remote.counts().await.expect("counts")
    );
    let query = vector(7, DIM);
    assert_eq!(
        ids(&edge.search(&query, 10, None).await.expect("edge")),
        ids(&remote.search(&query, 10, None).await.expect("remote"))
    );

    // Another embedder or dimension is refused, naming what built it.
    for (embedder, dimension) in [("seeded-16", 8), ("another", DIM)] {
        let other = QdrantStore::connect(
            options(&server, "parity"),
            embedder,
            dimension,
            Setup::Create,
        )
        .expect("connect");
        let err = other.counts().await.unwrap_err().to_string();
        assert!(
            err.contains("seeded-16") && err.contains("16 dimensions"),
            "{err}"
        );
    }
    // A search does not create a collection.
    let missing = QdrantStore::connect(options(&server, "absent"), "e", DIM, Setup::Existing)
        .expect("connect");
    let err = missing
        .search(&query, 3, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    // A rebuild starts empty.
    let rebuilt = QdrantStore::connect(options(&server, "parity"), "another", 8, Setup::Recreate)
        .expect("connect");
    assert_eq!(rebuilt.counts().await.expect("counts"), (0, 0));
}

#[tokio::test]
async fn a_knowledge_base_keeps_its_vectors_on_the_server() {
    let Some(server) = Server::start("a_knowledge_base_keeps_its_vectors_on_the_server") else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let backend = VectorBackend::Qdrant(options(&server, "notes"));
    let served_dir = work.path().join("served");
    let kb =
        KnowledgeBase::open_with(&served_dir, embedder(), Access::Write, &backend).expect("open");
    let report = ingest(&kb, &docs, false).await;
    assert_eq!(report.added, 5, "{report:?}");
    // Vectors, keywords and manifest are all on the server: nothing local.
    assert!(!served_dir.exists());
    assert_consistent(&kb).await;

    let embedded = KnowledgeBase::open(&work.path().join("embedded"), embedder(), Access::Write)
        .expect("open");
    ingest(&embedded, &docs, false).await;
    for query in ["attention heads", "低秩矩阵", "KV cache keys", "installer"] {
        for mode in [SearchMode::Vector, SearchMode::Bm25, SearchMode::Hybrid] {
            let here = embedded.search(query, 4, None, mode).await.expect("search");
            let there = kb.search(query, 4, None, mode).await.expect("search");
            let key = |hits: &[kb_retrievers::Hit]| -> Vec<String> {
                hits.iter().map(|h| h.scored.chunk.id.clone()).collect()
            };
            assert_eq!(key(&here), key(&there), "{query} {mode:?}");
        }
    }
    // The server's keywords are jieba's: a word inside unspaced Chinese
    // is found, and filters apply to them.
    let hits = kb
        .search("多头", 3, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].scored.chunk.text.contains("多头注意力"), "{hits:?}");
    let only_guide = Filter::from_str("source=docs/guide.md").expect("filter");
    let hits = kb
        .search("注意力 installer", 5, Some(&only_guide), SearchMode::Bm25)
        .await
        .expect("search");
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| h.scored.chunk.metadata["source"] == "docs/guide.md"),
        "{hits:?}"
    );
    let (files, guide_chunks) = kb
        .delete(&["docs/guide.md".to_string()])
        .await
        .expect("delete");
    assert_eq!(files, 1);
    assert_consistent(&kb).await;
    assert!(
        kb.search("installer", 3, None, SearchMode::Bm25)
            .await
            .expect("search")
            .is_empty(),
        "a deleted file's keywords are gone"
    );
    drop(kb);

    // Any process on any machine searches it with no local files, and sees
    // the change another made.
    let elsewhere = work.path().join("elsewhere");
    let reader =
        KnowledgeBase::open_with(&elsewhere, embedder(), Access::Read, &backend).expect("read");
    let hits = reader
        .search("attention", 3, None, SearchMode::Hybrid)
        .await
        .expect("search");
    assert!(!hits.is_empty());
    assert_eq!(reader.files().await.expect("files").len(), 4);
    assert_consistent(&reader).await;
    assert!(!elsewhere.exists());

    // A second writer (another directory beside the first, so the same
    // source names) ingests incrementally into the same knowledge base:
    // only the deleted file is new to it.
    let second = KnowledgeBase::open_with(
        &work.path().join("second"),
        embedder(),
        Access::Write,
        &backend,
    )
    .expect("open");
    let report = ingest(&second, &docs, false).await;
    assert_eq!((report.added, report.unchanged), (1, 4), "{report:?}");
    assert_eq!(report.chunks_written, guide_chunks, "{report:?}");
    assert_consistent(&second).await;
    // The reader, open all along, sees it.
    assert_eq!(reader.files().await.expect("files").len(), 5);
    drop((reader, second));

    // A knowledge base kept in a directory is refused with a server set
    // (its manifest is local), and moved there by a rebuild.
    let local = work.path().join("embedded");
    let err = KnowledgeBase::open_with(&local, embedder(), Access::Read, &backend).unwrap_err();
    assert!(err.to_string().contains("--rebuild"), "{err}");
    // Not while a process has it open.
    let err = KnowledgeBase::open_with(&local, embedder(), Access::Rebuild, &backend).unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    drop(embedded);
    let rebuilt =
        KnowledgeBase::open_with(&local, embedder(), Access::Rebuild, &backend).expect("rebuild");
    assert!(!local.join("manifest.db").exists() && !local.join("vectors").exists());
    assert_eq!(ingest(&rebuilt, &docs, false).await.added, 5);
    assert_consistent(&rebuilt).await;
    // A search process on a collection never ingested into says so.
    let none = QdrantOptions {
        collection: "never".into(),
        ..QdrantOptions::new(server.url())
    };
    let empty = KnowledgeBase::open_with(
        &elsewhere,
        embedder(),
        Access::Read,
        &VectorBackend::Qdrant(none),
    )
    .expect("open");
    let err = empty.ready().await.unwrap_err();
    assert!(err.to_string().contains("kb ingest"), "{err}");
}

/// Two writers at once: the second is refused while the first holds the
/// knowledge base, and gets it once the first is done; a writer that dies
/// keeps it only until its claim runs out.
#[tokio::test]
async fn one_writer_at_a_time_and_a_dead_one_lets_go() {
    let Some(server) = Server::start("one_writer_at_a_time_and_a_dead_one_lets_go") else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let backend = VectorBackend::Qdrant(QdrantOptions {
        collection: "leased".into(),
        lease: Duration::from_secs(2),
        ..QdrantOptions::new(server.url())
    });
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let gated = Arc::new(GatedEmbedder {
        inner: embedder(),
        started: Mutex::new(Some(started_tx)),
        go: tokio::sync::Mutex::new(Some(go_rx)),
    });
    let first = KnowledgeBase::open_with(&work.path().join("a"), gated, Access::Write, &backend)
        .expect("open");
    let second =
        KnowledgeBase::open_with(&work.path().join("b"), embedder(), Access::Write, &backend)
            .expect("open");
    let docs_a = docs.clone();
    let running = tokio::spawn(async move {
        let mut progress = |_: Progress| {};
        first
            .ingest(&[docs_a], &IngestOptions::default(), &mut progress)
            .await
    });
    started_rx.await.expect("the first writer started");
    // Held for longer than a lease: the first writer renews it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut progress = |_: Progress| {};
    let err = second
        .ingest(
            std::slice::from_ref(&docs),
            &IngestOptions::default(),
            &mut progress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    assert!(
        err.to_string().contains("is being changed by kb on"),
        "{err}"
    );
    go_tx.send(()).expect("go");
    let report = running.await.expect("join").expect("first ingest");
    assert_eq!(report.added, 5, "{report:?}");
    // Released at the end: the second goes at once.
    assert_eq!(ingest(&second, &docs, false).await.unchanged, 5);

    // A writer that dies mid-change (its task dropped: no release, no
    // renewal) keeps the others out until its claim runs out; the next
    // writer then finishes what it left.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (_go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let gated = Arc::new(GatedEmbedder {
        inner: embedder(),
        started: Mutex::new(Some(started_tx)),
        go: tokio::sync::Mutex::new(Some(go_rx)),
    });
    let dying = KnowledgeBase::open_with(&work.path().join("c"), gated, Access::Write, &backend)
        .expect("open");
    write(
        &docs,
        "new.md",
        "# New\n\nA file the dying writer never finishes.\n".as_bytes(),
    );
    let docs_c = docs.clone();
    let doomed = tokio::spawn(async move {
        let mut progress = |_: Progress| {};
        dying
            .ingest(&[docs_c], &IngestOptions::default(), &mut progress)
            .await
    });
    started_rx.await.expect("the dying writer started");
    doomed.abort();
    let _ = doomed.await;
    let err = second
        .ingest(
            std::slice::from_ref(&docs),
            &IngestOptions::default(),
            &mut progress,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = ingest(&second, &docs, false).await;
    assert_eq!(report.added, 1, "{report:?}");
    assert_consistent(&second).await;
}

/// An embedder that says when it is first called, then waits for a go.
struct GatedEmbedder {
    inner: Arc<dyn Embedder>,
    started: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    go: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait]
impl Embedder for GatedEmbedder {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        if let Some(started) = self.started.lock().expect("lock").take() {
            let _ = started.send(());
        }
        if let Some(go) = self.go.lock().await.take() {
            let _ = go.await;
        }
        self.inner.embed_documents(texts).await
    }
}

/// An embedder that kills the server as it is asked for its `at`-th batch.
struct KillingEmbedder {
    inner: Arc<dyn Embedder>,
    server: Arc<Mutex<Server>>,
    calls: AtomicUsize,
    at: usize,
}

#[async_trait]
impl Embedder for KillingEmbedder {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn embed_documents(&self, texts: &[&str]) -> kb_core::Result<Vec<Vec<f32>>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.server.lock().expect("server").kill();
        }
        self.inner.embed_documents(texts).await
    }
}

#[tokio::test]
async fn an_ingest_the_server_dies_in_converges_on_the_next_run() {
    let Some(server) = Server::start("an_ingest_the_server_dies_in_converges_on_the_next_run")
    else {
        return;
    };
    let server = Arc::new(Mutex::new(server));
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let backend = VectorBackend::Qdrant(QdrantOptions {
        lease: Duration::from_secs(2),
        ..options(&server.lock().expect("server"), "crash")
    });
    let dir = work.path().join(".kb");
    // One file per batch: the server dies while the third is embedded.
    let one_by_one = IngestOptions {
        batch_chunks: 1,
        ..IngestOptions::default()
    };
    let killing = Arc::new(KillingEmbedder {
        inner: embedder(),
        server: server.clone(),
        calls: AtomicUsize::new(0),
        at: 3,
    });
    {
        let kb = KnowledgeBase::open_with(&dir, killing, Access::Write, &backend).expect("open");
        let mut progress = |_: Progress| {};
        let err = kb
            .ingest(std::slice::from_ref(&docs), &one_by_one, &mut progress)
            .await
            .unwrap_err();
        let message = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
        assert!(message.contains("cannot be reached"), "{message}");
    }
    server.lock().expect("server").restart();
    let reader = KnowledgeBase::open_with(&dir, embedder(), Access::Read, &backend).expect("read");
    let committed = reader.files().await.expect("files").len();
    assert!(committed < 5, "{committed} files committed");
    // The dead writer's claim runs out; the next writer converges.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let kb = KnowledgeBase::open_with(&dir, embedder(), Access::Write, &backend).expect("reopen");
    let report = ingest(&kb, &docs, false).await;
    assert_eq!(report.added + report.unchanged, 5, "{report:?}");
    assert_consistent(&kb).await;
    assert_eq!(kb.files().await.expect("files").len(), 5);
}

#[tokio::test]
async fn a_wrong_key_and_a_silent_server_fail_clearly() {
    let Some(server) = Server::start_with_key(
        "a_wrong_key_and_a_silent_server_fail_clearly",
        Some("s3cret"),
    ) else {
        return;
    };
    let query = vector(1, 8);
    let with_key = |key: Option<&str>| QdrantOptions {
        api_key: key.map(str::to_string),
        ..options(&server, "keyed")
    };
    for key in [None, Some("wrong")] {
        let store = QdrantStore::connect(with_key(key), "e", 8, Setup::Create).expect("connect");
        let err = store.search(&query, 3, None).await.unwrap_err().to_string();
        assert!(err.contains("API key"), "{err}");
    }
    let store =
        QdrantStore::connect(with_key(Some("s3cret")), "e", 8, Setup::Create).expect("connect");
    store.setup().await.expect("the right key");

    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4).flatten() {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let store = QdrantStore::connect(
        QdrantOptions {
            timeout: Duration::from_secs(1),
            ..QdrantOptions::new(format!("http://127.0.0.1:{port}"))
        },
        "e",
        8,
        Setup::Create,
    )
    .expect("connect");
    let started = Instant::now();
    let err = store.search(&query, 3, None).await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("in time"), "{err}");
    drop(held);
}

/// Waits until every replica of `collection` that `node` knows is Active.
fn wait_until_active(node: &Server, collection: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = node.get_json(&format!("/collections/{collection}/cluster"));
        let states: Vec<String> = info
            .iter()
            .flat_map(|i| {
                let result = &i["result"];
                let shards = |key: &str| result[key].as_array().cloned().unwrap_or_default();
                let mut all = shards("local_shards");
                all.extend(shards("remote_shards"));
                all
            })
            .map(|shard| shard["state"].as_str().unwrap_or("?").to_string())
            .collect();
        if !states.is_empty() && states.iter().all(|s| s == "Active") {
            return;
        }
        assert!(Instant::now() < deadline, "replicas not active: {states:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_through_any_node_and_survives_one_killed() {
    let Some(mut cluster) = support::qdrant::Cluster::start(
        "a_cluster_answers_through_any_node_and_survives_one_killed",
    ) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let urls: Vec<String> = cluster.nodes.iter().map(Server::url).collect();
    let through = |node: usize| QdrantOptions {
        collection: "spread".into(),
        shards: Some(3),
        replicas: Some(2),
        ..QdrantOptions::new(urls[node].clone())
    };
    let dir = work.path().join(".kb");
    let kb = KnowledgeBase::open_with(
        &dir,
        embedder(),
        Access::Write,
        &VectorBackend::Qdrant(through(0)),
    )
    .expect("open");
    ingest(&kb, &docs, false).await;
    assert_consistent(&kb).await;
    drop(kb);
    let info = cluster.nodes[0]
        .get_json("/collections/spread")
        .expect("collection info");
    let params = &info["result"]["config"]["params"];
    assert_eq!(
        (
            params["shard_number"].as_u64(),
            params["replication_factor"].as_u64()
        ),
        (Some(3), Some(2))
    );

    let queries = [
        "attention heads",
        "低秩矩阵",
        "KV cache keys",
        "installer",
        "beam search",
    ];
    let search_through = |node: usize| {
        let store =
            QdrantStore::connect(through(node), "bytes-64", 64, Setup::Existing).expect("connect");
        async move {
            let mut all = Vec::new();
            for query in queries {
                let vector = embedder().embed_query(query).await.expect("embed");
                all.push(ids(&store.search(&vector, 5, None).await.expect("search")));
            }
            all
        }
    };
    let expected = search_through(0).await;
    assert!(expected.iter().all(|hits| hits.len() == 5), "{expected:?}");
    for node in 1..3 {
        assert_eq!(search_through(node).await, expected, "through node {node}");
    }

    // One node dies: the other two still answer, with the same top-k.
    cluster.nodes[0].kill();
    for node in 1..3 {
        assert_eq!(
            search_through(node).await,
            expected,
            "node 0 down, through node {node}"
        );
    }
    // Ingesting with a node down completes, or fails clearly with nothing
    // half-committed; either way the next run converges.
    support::corpus::write(
        &docs,
        "later.md",
        "Speculative decoding drafts tokens with a small model.".as_bytes(),
    );
    let kb = KnowledgeBase::open_with(
        &dir,
        embedder(),
        Access::Write,
        &VectorBackend::Qdrant(through(1)),
    )
    .expect("open");
    let mut progress = |_: Progress| {};
    match kb
        .ingest(
            std::slice::from_ref(&docs),
            &IngestOptions::default(),
            &mut progress,
        )
        .await
    {
        Ok(report) => {
            assert_eq!(report.added, 1, "{report:?}");
            eprintln!("ingest with a node down: completed");
        }
        Err(err) => {
            assert!(err.to_string().contains("spread"), "{err}");
            eprintln!("ingest with a node down: failed with {err}");
        }
    }
    cluster.nodes[0].restart();
    cluster.wait_for_peers();
    wait_until_active(&cluster.nodes[0], "spread");
    let again = ingest(&kb, &docs, false).await;
    assert_eq!(again.added + again.unchanged, 6, "{again:?}");
    assert_consistent(&kb).await;
    let counts = kb.stats().await.expect("stats").vectors;
    for node in 0..3 {
        let store =
            QdrantStore::connect(through(node), "bytes-64", 64, Setup::Existing).expect("connect");
        assert_eq!(
            store.counts().await.expect("counts").0,
            counts,
            "node {node}"
        );
    }
    let now = search_through(0).await;
    for node in 1..3 {
        assert_eq!(
            search_through(node).await,
            now,
            "after the restart, through node {node}"
        );
    }
}
