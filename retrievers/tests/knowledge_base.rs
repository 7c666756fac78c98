//! The knowledge base on real files: incremental and idempotent ingestion,
//! modify/delete/prune, filters and explanations, the embedder check, the
//! writer lock, and recovery from an interrupted change. The control-flow
//! tests use a small deterministic embedder; `real_embedder_end_to_end` runs
//! all-MiniLM-L6-v2.

mod support;

use std::sync::Arc;

use kb_core::Embedder;
use kb_retrievers::{Access, Error, IngestOptions, KnowledgeBase, Progress, SearchMode, UNIT_KEY};
use support::corpus::{ByteEmbedder, assert_consistent, corpus, embedder, ingest, write};

#[tokio::test]
async fn ingestion_is_incremental_idempotent_and_consistent() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let kb_dir = work.path().join(".kb");
    let kb = KnowledgeBase::open(&kb_dir, embedder(), Access::Write).expect("open");
    let first = ingest(&kb, &docs, false).await;
    assert_eq!(first.added, 5, "{first:?}");
    assert_eq!(first.skipped.len(), 1, "{:?}", first.skipped); // broken.json
    assert!(
        first.skipped[0].reason.contains("JSON"),
        "{:?}",
        first.skipped
    );
    assert_consistent(&kb).await;
    let sources: Vec<String> = kb
        .files()
        .await
        .expect("files")
        .into_iter()
        .map(|f| f.source)
        .collect();
    assert!(
        sources.contains(&"docs/notes/lora-gbk.txt".to_string()),
        "{sources:?}"
    );

    let again = ingest(&kb, &docs, false).await;
    assert_eq!(
        (again.added, again.updated, again.unchanged),
        (0, 0, 5),
        "{again:?}"
    );
    assert_eq!(again.chunks_written, 0);

    // Touching a file without changing it re-reads it but writes nothing.
    let attention = docs.join("notes/attention.txt");
    let text = std::fs::read(&attention).expect("read");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&attention, &text).expect("rewrite");
    let touched = ingest(&kb, &docs, false).await;
    assert_eq!(touched.unchanged, 5);
    assert_eq!(touched.chunks_written, 0);

    // GBK text was decoded: BM25 finds it.
    let hits = kb
        .search("低秩矩阵", 3, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert_eq!(
        hits[0].scored.chunk.metadata["source"],
        "docs/notes/lora-gbk.txt"
    );
    // Markdown heading paths are kept.
    let hits = kb
        .search("installer", 1, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert_eq!(
        hits[0].scored.chunk.metadata["headings"],
        "# Guide > ## Install"
    );
}

#[tokio::test]
async fn modify_delete_and_prune() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let kb =
        KnowledgeBase::open(&work.path().join(".kb"), embedder(), Access::Write).expect("open");
    ingest(&kb, &docs, false).await;

    write(
        &docs,
        "notes/attention.txt",
        "自注意力计算查询和键的相似度。".as_bytes(),
    );
    let changed = ingest(&kb, &docs, false).await;
    assert_eq!(changed.updated, 1, "{changed:?}");
    assert!(changed.chunks_removed >= 1);
    let old = kb
        .search("多头注意力", 5, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert!(
        old.iter().all(|h| !h.scored.chunk.text.contains("多头")),
        "stale chunk still indexed"
    );
    let new = kb
        .search("自注意力", 1, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert!(new[0].scored.chunk.text.contains("自注意力"));
    assert_consistent(&kb).await;

    std::fs::remove_file(docs.join("page.html")).expect("rm");
    let without_prune = ingest(&kb, &docs, false).await;
    assert_eq!(without_prune.removed, 0);
    let pruned = ingest(&kb, &docs, true).await;
    assert_eq!(pruned.removed, 1, "{pruned:?}");
    assert!(
        kb.search("KV cache", 5, None, SearchMode::Bm25)
            .await
            .expect("search")
            .is_empty()
    );

    let (files, chunks) = kb
        .delete(&["docs/guide.md".to_string()])
        .await
        .expect("delete");
    assert_eq!(files, 1);
    assert!(chunks >= 1);
    assert_eq!(kb.files().await.expect("files").len(), 3);
    assert_consistent(&kb).await;
}

#[tokio::test]
async fn filters_and_explanations() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let kb =
        KnowledgeBase::open(&work.path().join(".kb"), embedder(), Access::Write).expect("open");
    ingest(&kb, &docs, false).await;
    let filter = "source=docs/faq.jsonl".parse().expect("filter");
    for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25] {
        let hits = kb
            .search("keeps", 5, Some(&filter), mode)
            .await
            .expect("search");
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(
            hits.iter()
                .all(|h| h.scored.chunk.metadata["source"] == "docs/faq.jsonl"),
            "{mode:?}: {hits:?}"
        );
    }
    let hits = kb
        .search("Beam search hypotheses", 3, None, SearchMode::Hybrid)
        .await
        .expect("search");
    let top = &hits[0];
    assert_eq!(top.scored.chunk.doc_id, "docs/faq.jsonl#1");
    assert_eq!(top.bm25.map(|r| r.rank), Some(1), "{top:?}");
    assert!(top.vector.is_some(), "{top:?}");
}

#[tokio::test]
async fn another_embedder_lock_and_rebuild() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let dir = work.path().join(".kb");
    {
        let kb = KnowledgeBase::open(&dir, embedder(), Access::Write).expect("open");
        ingest(&kb, &docs, false).await;
        // One writer at a time, and no reader while it writes.
        let err = KnowledgeBase::open(&dir, embedder(), Access::Write).unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        let err = KnowledgeBase::open(&dir, embedder(), Access::Read).unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
    }
    let other: Arc<dyn Embedder> = Arc::new(ByteEmbedder {
        id: "bytes-32",
        dimension: 32,
    });
    let err = KnowledgeBase::open(&dir, other.clone(), Access::Read).unwrap_err();
    assert!(matches!(err, Error::EmbedderMismatch { .. }), "{err}");
    assert!(err.to_string().contains("--rebuild"), "{err}");
    let kb = KnowledgeBase::open(&dir, other, Access::Rebuild).expect("rebuild");
    assert_eq!(kb.files().await.expect("files").len(), 0);
    let report = ingest(&kb, &docs, false).await;
    assert_eq!(report.added, 5);
    assert_consistent(&kb).await;
    drop(kb);
    let err =
        KnowledgeBase::open(&work.path().join("nothing"), embedder(), Access::Read).unwrap_err();
    assert!(matches!(err, Error::Missing(_)), "{err}");
}

#[tokio::test]
async fn a_reader_waits_for_the_process_before_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let dir = work.path().join(".kb");
    let other: Arc<dyn Embedder> = embedder();
    let kb = KnowledgeBase::open(&dir, other, Access::Write).expect("open");
    ingest(&kb, &docs, false).await;
    drop(kb);
    let first = KnowledgeBase::open(&dir, embedder(), Access::Read).expect("first reader");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let started = std::time::Instant::now();
    let second = KnowledgeBase::open(&dir, embedder(), Access::Read).expect("second reader");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    release.join().expect("thread");
    let hits = second
        .search("KV cache", 3, None, SearchMode::Hybrid)
        .await
        .expect("search");
    assert!(!hits.is_empty());
}

#[tokio::test]
async fn units_lead_to_their_chunk_and_go_with_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    write(
        &docs,
        "mixed.txt",
        "Paragraph one talks about gardening and tomatoes in the summer sun. \
         Zebras zigzag zealously. \
         Then it drifts to cooking pasta with basil, garlic and good olive oil."
            .as_bytes(),
    );
    let kb =
        KnowledgeBase::open(&work.path().join(".kb"), embedder(), Access::Write).expect("open");
    let options = IngestOptions {
        unit_size: 40,
        ..IngestOptions::default()
    };
    kb.ingest(std::slice::from_ref(&docs), &options, &mut |_: Progress| {})
        .await
        .expect("ingest");
    let stats = kb.stats().await.expect("stats");
    assert_eq!(stats.chunks, 1, "{stats:?}");
    assert!(stats.unit_vectors >= 3, "{stats:?}");
    assert_consistent(&kb).await;

    // A query like one sentence finds the chunk once, not once per unit.
    let hits = kb
        .search("Zebras zigzag zealously.", 5, None, SearchMode::Vector)
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    assert!(
        hits[0].scored.chunk.text.contains("olive oil"),
        "the whole chunk"
    );
    let matched = hits[0].scored.chunk.metadata.get(UNIT_KEY);
    assert!(
        matched
            .and_then(|u| u.as_str())
            .is_some_and(|u| u.starts_with("Zebras zigzag zealously.")),
        "the unit that matched: {matched:?}"
    );

    let (files, chunks) = kb
        .delete(&["docs/mixed.txt".to_string()])
        .await
        .expect("delete");
    assert_eq!((files, chunks), (1, 1));
    let stats = kb.stats().await.expect("stats");
    assert_eq!((stats.vectors, stats.unit_vectors), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn the_glossary_connects_an_english_query_to_chinese_notes() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    write(
        &docs,
        "glossary.txt",
        "分布式训练有两种方式：张量并行 (Tensor Parallelism) 把一层切开。".as_bytes(),
    );
    write(
        &docs,
        "plain.txt",
        "张量并行把某一个层做切分，放置到不同设备之上。".as_bytes(),
    );
    write(
        &docs,
        "other.txt",
        "The layer is split across devices in this English note about sharding.".as_bytes(),
    );
    let dir = work.path().join(".kb");
    let mut kb = KnowledgeBase::open(&dir, embedder(), Access::Write).expect("open");
    ingest(&kb, &docs, false).await;
    assert_eq!(kb.glossary().len(), 1);

    // BM25 alone cannot connect "tensor parallelism" with plain.txt; the
    // glossary adds 张量并行 to the query.
    let query = "How does tensor parallelism work?";
    assert_eq!(kb.retriever(None).expansion(query), ["张量并行"]);
    let sources = |hits: &[kb_retrievers::Hit]| -> Vec<String> {
        hits.iter()
            .map(|h| {
                h.scored.chunk.metadata["source"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let hits = kb
        .search(query, 5, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert!(
        sources(&hits).contains(&"docs/plain.txt".to_string()),
        "{:?}",
        sources(&hits)
    );
    kb.set_query_expansion(false);
    let hits = kb
        .search(query, 5, None, SearchMode::Bm25)
        .await
        .expect("search");
    assert!(
        !sources(&hits).contains(&"docs/plain.txt".to_string()),
        "{:?}",
        sources(&hits)
    );

    // The pair goes with its file, and comes back from the manifest.
    kb.delete(&["docs/glossary.txt".to_string()])
        .await
        .expect("delete");
    assert!(kb.glossary().is_empty());
    ingest(&kb, &docs, false).await;
    drop(kb);
    let kb = KnowledgeBase::open(&dir, embedder(), Access::Read).expect("reopen");
    assert_eq!(kb.glossary().len(), 1);
}

/// Hostile input: each file is skipped with a reason or read as well as it
/// can be, the rest is ingested, and the indexes stay consistent.
#[tokio::test]
async fn hostile_files_are_skipped_with_reasons_and_the_rest_ingests() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    write(
        &docs,
        "good.md",
        "# Otters\n\nOtters hold hands while they sleep.".as_bytes(),
    );
    // A 1 GB sparse file: over the size limit, never read.
    let huge = std::fs::File::create(docs.join("huge.txt")).expect("create");
    huge.set_len(1 << 30).expect("sparse");
    // JSON nested far deeper than any parser should follow.
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    write(&docs, "nested.json", nested.as_bytes());
    // UTF-8 with damaged bytes in the middle.
    let mut damaged = "# 笔记\n\n水獭睡觉时会牵着手，以免被水流冲散。"
        .as_bytes()
        .to_vec();
    damaged.extend_from_slice(b"\xff\xfe\xfd");
    damaged.extend_from_slice("醒来以后它们一起觅食，这是很有趣的行为。".as_bytes());
    write(&docs, "damaged.md", &damaged);
    // A link back up the tree, and a link to a real folder.
    let elsewhere = work.path().join("elsewhere");
    write(
        &elsewhere,
        "linked.md",
        b"# Linked\n\nA note that lives in a linked folder.",
    );
    #[cfg(unix)]
    {
        std::fs::create_dir_all(docs.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("..", docs.join("sub/loop")).expect("symlink");
        std::os::unix::fs::symlink(&elsewhere, docs.join("shared")).expect("symlink");
    }

    let kb =
        KnowledgeBase::open(&work.path().join(".kb"), embedder(), Access::Write).expect("open");
    let report = ingest(&kb, &docs, false).await;
    let reason = |path: &str| {
        report
            .skipped
            .iter()
            .find(|s| s.path.ends_with(path))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{path} was not skipped: {:?}", report.skipped))
    };
    assert!(reason("huge.txt").contains("limit"));
    assert!(reason("nested.json").contains("not valid JSON"));
    #[cfg(unix)]
    {
        assert!(reason("loop").contains("loop"), "{}", reason("loop"));
        assert_eq!(
            report.added, 3,
            "good.md, damaged.md and the linked note: {report:?}"
        );
    }
    let hits = kb
        .search("水獭牵手", 5, None, SearchMode::Bm25)
        .await
        .expect("search");
    let damaged_text = &hits
        .iter()
        .find(|h| h.scored.chunk.doc_id.ends_with("damaged.md"))
        .expect("the damaged note is searchable")
        .scored
        .chunk
        .text;
    assert!(
        damaged_text.contains("冲散。\u{fffd}") && damaged_text.contains("醒来以后"),
        "{damaged_text}"
    );
    assert_consistent(&kb).await;
}

/// A file listed for ingestion and gone before it is read is skipped.
#[test]
fn a_file_that_disappears_before_it_is_read_is_skipped() {
    let work = tempfile::tempdir().expect("tempdir");
    write(work.path(), "brief.md", b"# Brief\n\nHere a moment.");
    let loader = kb_retrievers::DirectoryLoader::new();
    let (files, _) = loader.files(work.path()).expect("list");
    assert_eq!(files.len(), 1);
    std::fs::remove_file(work.path().join("brief.md")).expect("remove");
    let report = loader.load_entry(&files[0]);
    assert!(report.documents.is_empty());
    assert!(
        report.skipped[0].reason.contains("cannot read"),
        "{:?}",
        report.skipped
    );
}

/// Markdown whose every chunk names `revision`.
fn revised(revision: &str) -> String {
    (1..=6)
        .map(|part| {
            let line = format!("In revision {revision}, part {part} says the same thing again. ");
            format!("## Part {part}\n\n{}\n\n", line.repeat(8))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_during_a_change_sees_the_old_or_the_new_document_never_a_mix() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    write(&docs, "doc.md", revised("alpha").as_bytes());
    let kb = Arc::new(
        KnowledgeBase::open(&work.path().join(".kb"), embedder(), Access::Write).expect("open"),
    );
    ingest(&kb, &docs, false).await;
    let chunks = kb.stats().await.expect("stats").chunks;
    assert!(chunks >= 4, "several chunks to catch a half: {chunks}");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (kb, docs, done) = (kb.clone(), docs.clone(), done.clone());
        tokio::spawn(async move {
            for round in 0..24 {
                let revision = if round % 2 == 0 { "beta" } else { "alpha" };
                write(&docs, "doc.md", revised(revision).as_bytes());
                ingest(&kb, &docs, false).await;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut searches = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        for mode in [SearchMode::Hybrid, SearchMode::Vector, SearchMode::Bm25] {
            let hits = kb
                .search("part says the same thing again", 50, None, mode)
                .await
                .expect("search");
            let revisions: std::collections::BTreeSet<&str> = hits
                .iter()
                .filter_map(|h| {
                    ["alpha", "beta"]
                        .into_iter()
                        .find(|r| h.scored.chunk.text.contains(&format!("revision {r}")))
                })
                .collect();
            assert_eq!(
                revisions.len(),
                1,
                "{mode:?} mixed revisions: {revisions:?}"
            );
            // Neighbouring chunks come back joined: count what each hit holds.
            let found: usize = hits
                .iter()
                .map(|h| {
                    h.scored
                        .chunk
                        .metadata
                        .get("chunks")
                        .and_then(|c| c.as_array())
                        .map_or(1, Vec::len)
                })
                .sum();
            assert_eq!(found, chunks, "{mode:?}: part of the document");
            searches += 1;
        }
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
    assert!(searches >= 3, "searches ran during the changes: {searches}");
    assert_consistent(&kb).await;
}
