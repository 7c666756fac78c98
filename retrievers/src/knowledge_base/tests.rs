//! Tests that reach inside the knowledge base: a crash simulated between
//! the manifest's two steps.

#[path = "../../tests/support/corpus.rs"]
mod corpus;

use corpus::{assert_consistent, corpus, embedder, ingest};

use crate::manifest::sqlite::Manifest;
use crate::{Access, KnowledgeBase, chunk_ids_by_source};

#[tokio::test]
async fn an_interrupted_change_is_repaired_by_the_next_writer() {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    corpus(&docs);
    let clean_dir = work.path().join("clean");
    let clean = KnowledgeBase::open(&clean_dir, embedder(), Access::Write).expect("open");
    ingest(&clean, &docs, false).await;
    let expected = chunk_ids_by_source(&clean).await.expect("ids");

    // Simulate a crash after the first manifest step: pending ids recorded,
    // files forgotten, indexes half written.
    let dir = work.path().join(".kb");
    {
        let kb = KnowledgeBase::open(&dir, embedder(), Access::Write).expect("open");
        ingest(&kb, &docs, false).await;
    }
    {
        let mut manifest = Manifest::open(&dir.join("manifest.db")).expect("manifest");
        let record = manifest
            .file("docs/guide.md")
            .expect("file")
            .expect("record");
        manifest
            .begin_change(&["docs/guide.md"], &record.chunk_ids)
            .expect("begin");
    }
    {
        // `check` sees the forgotten file's chunks left in both indexes.
        let kb = KnowledgeBase::open(&dir, embedder(), Access::Read).expect("read");
        let check = kb.check().await.expect("check");
        assert!(!check.is_consistent() && check.interrupted, "{check:?}");
        let mut left = expected["docs/guide.md"].clone();
        left.sort();
        assert_eq!(check.extra_vectors, left);
        assert_eq!(check.extra_bm25, left);
        assert!(check.orphan_units.iter().all(|id| left.contains(id)));
        assert!(check.missing_vectors.is_empty() && check.missing_bm25.is_empty());
    }
    let kb = KnowledgeBase::open(&dir, embedder(), Access::Write).expect("reopen");
    let report = ingest(&kb, &docs, false).await;
    assert!(report.recovered >= 1, "{report:?}");
    assert_eq!(report.added, 1, "the forgotten file is ingested again");
    assert_eq!(chunk_ids_by_source(&kb).await.expect("ids"), expected);
    assert_consistent(&kb).await;
}
