//! [`ManifestStore`]: what a knowledge base asks of its manifest, wherever
//! it is kept.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::record::FileRecord;
use crate::error::Result;
use crate::glossary::TermPair;

/// The manifest's operations. A change of the indexes is bracketed by
/// [`begin_change`](Self::begin_change) (the touched chunk ids recorded as
/// pending, the changed files forgotten) and
/// [`commit_change`](Self::commit_change) (the files recorded, nothing
/// pending), so that a crash in between leaves files to ingest again and
/// [`orphans`](Self::orphans) to remove from the indexes.
#[async_trait]
pub(crate) trait ManifestStore: Send + Sync + std::fmt::Debug {
    /// The record of `source` with its chunk ids, if it was ingested.
    async fn file(&self, source: &str) -> Result<Option<FileRecord>>;
    /// Every ingested file, ordered by source; `chunk_ids` holds as many
    /// placeholders as the file has chunks.
    async fn files(&self) -> Result<Vec<FileRecord>>;
    /// Each file's chunk ids, sorted.
    async fn chunk_ids_by_source(&self) -> Result<BTreeMap<String, Vec<String>>>;
    /// Every committed chunk id.
    async fn all_chunk_ids(&self) -> Result<Vec<String>>;
    /// Number of committed chunks.
    async fn chunk_count(&self) -> Result<usize>;
    /// Updates a file's size and modification time (its content is unchanged).
    async fn touch(&self, source: &str, size: u64, mtime_ns: u64) -> Result<()>;
    /// Records `touched` chunk ids as pending and forgets the files `sources`.
    async fn begin_change(&self, sources: &[String], touched: &[String]) -> Result<()>;
    /// Records `files` and their term pairs (`(source, pair)`); clears the
    /// pending ids.
    async fn commit_change(&self, files: &[FileRecord], terms: &[(String, TermPair)])
    -> Result<()>;
    /// Pending chunk ids that belong to no committed file.
    async fn orphans(&self) -> Result<Vec<String>>;
    /// Every term pair of the knowledge base's files.
    async fn terms(&self) -> Result<Vec<TermPair>>;
    /// Whether an interrupted change left pending ids.
    async fn has_pending(&self) -> Result<bool>;
    /// Clears the pending ids.
    async fn clear_pending(&self) -> Result<()>;
}
