//! What a knowledge base holds: counts and sizes, and a chunk-by-chunk
//! comparison of both indexes with the manifest.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use kb_core::{Embedder, StoredIds};
use serde::Serialize;

use super::*;
use crate::error::Result;

/// Counts of a knowledge base.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The directory.
    pub dir: PathBuf,
    /// The embedder it was built with.
    pub embedder: String,
    /// The vectors' dimension.
    pub dimension: usize,
    /// Files ingested.
    pub files: usize,
    /// Documents ingested.
    pub documents: usize,
    /// Chunks in the manifest.
    pub chunks: usize,
    /// Chunk vectors in the vector store.
    pub vectors: usize,
    /// Unit vectors in the vector store (see [`IngestOptions::unit_size`]).
    pub unit_vectors: usize,
    /// Chunks in the BM25 index.
    pub bm25_chunks: usize,
    /// Bilingual term pairs in the glossary (see [`glossary`](crate::glossary)).
    pub glossary_terms: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// What [`KnowledgeBase::check`] found: each index against the manifest.
///
/// Ids are chunk ids. An interrupted change is not an inconsistency: the
/// next writer repairs it (`interrupted` says one is waiting).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    /// Files in the manifest.
    pub files: usize,
    /// Chunks in the manifest.
    pub chunks: usize,
    /// Whether an interrupted change waits for the next writer to repair it.
    pub interrupted: bool,
    /// Chunks of the manifest without a vector.
    pub missing_vectors: Vec<String>,
    /// Vectors of chunks the manifest does not hold.
    pub extra_vectors: Vec<String>,
    /// Unit vectors whose chunk the manifest does not hold.
    pub orphan_units: Vec<String>,
    /// Chunks of the manifest missing from the BM25 index.
    pub missing_bm25: Vec<String>,
    /// BM25 entries of chunks the manifest does not hold.
    pub extra_bm25: Vec<String>,
    /// Chunks the BM25 index holds more than once.
    pub duplicate_bm25: Vec<String>,
}

impl Check {
    /// Whether both indexes hold exactly the manifest's chunks, once each.
    pub fn is_consistent(&self) -> bool {
        self.missing_vectors.is_empty()
            && self.extra_vectors.is_empty()
            && self.orphan_units.is_empty()
            && self.missing_bm25.is_empty()
            && self.extra_bm25.is_empty()
            && self.duplicate_bm25.is_empty()
    }
}

impl KnowledgeBase {
    /// Counts and sizes.
    pub async fn stats(&self) -> Result<Stats> {
        let (vectors, units) = self.vectors.counts().await?;
        let bm25_chunks = self.keywords.keyword_count().await?;
        let files = self.manifest.files().await?;
        let chunks = self.manifest.chunk_count().await?;
        self.ready().await?;
        Ok(Stats {
            dir: self.dir.clone(),
            embedder: self.embedder.id().to_string(),
            dimension: self.embedder.dimension(),
            files: files.len(),
            documents: files.iter().map(|f| f.documents).sum(),
            chunks,
            vectors,
            unit_vectors: units,
            bm25_chunks,
            glossary_terms: self.glossary().len(),
            disk_bytes: disk_usage(&self.dir),
        })
    }

    /// Compares both indexes with the manifest, chunk by chunk; changes
    /// nothing. An interrupted change's leftovers count as inconsistent
    /// until a writer (the next ingest) removes them.
    pub async fn check(&self) -> Result<Check> {
        let _view = self.snapshots.read().await;
        let files = self.manifest.files().await?.len();
        let ids = self.manifest.all_chunk_ids().await?;
        let interrupted = self.manifest.has_pending().await?;
        let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let StoredIds {
            chunks: vectors,
            units,
        } = self.vectors.ids().await?;
        let bm25 = self.keywords.keyword_ids().await?;
        let missing = |found: &[String]| -> Vec<String> {
            let found: HashSet<&str> = found.iter().map(String::as_str).collect();
            let mut missing: Vec<String> = expected
                .iter()
                .filter(|id| !found.contains(*id))
                .map(|id| id.to_string())
                .collect();
            missing.sort();
            missing
        };
        let extra = |found: &[String]| -> Vec<String> {
            let mut extra: Vec<String> = found
                .iter()
                .filter(|id| !expected.contains(id.as_str()))
                .cloned()
                .collect();
            extra.sort();
            extra.dedup();
            extra
        };
        let mut seen = HashSet::new();
        let mut duplicate_bm25: Vec<String> = bm25
            .iter()
            .filter(|id| !seen.insert(id.as_str()))
            .cloned()
            .collect();
        duplicate_bm25.sort();
        duplicate_bm25.dedup();
        Ok(Check {
            files,
            chunks: expected.len(),
            interrupted,
            missing_vectors: missing(&vectors),
            extra_vectors: extra(&vectors),
            orphan_units: extra(&units),
            missing_bm25: missing(&bm25),
            extra_bm25: extra(&bm25),
            duplicate_bm25,
        })
    }
}

pub(super) fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Chunk ids by source (each sorted), for tests and tools that compare two
/// knowledge bases.
pub async fn chunk_ids_by_source(kb: &KnowledgeBase) -> Result<BTreeMap<String, Vec<String>>> {
    kb.manifest.chunk_ids_by_source().await
}
