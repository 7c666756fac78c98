//! What callers pass to a knowledge base and what they get back.

use std::time::Duration;

use serde::Serialize;

use crate::loader::{DirectoryLoader, Skipped};
use crate::store::qdrant::QdrantOptions;

/// How a knowledge base is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Search only; fails if the knowledge base does not exist. The vector
    /// engine holds its files alone, so one process at a time opens a
    /// knowledge base: a reader waits up to [`READ_WAIT`] for the one before
    /// it (another `kb search` finishes in well under a second), then fails
    /// with [`Error::Busy`].
    Read,
    /// Ingest and delete; creates the knowledge base if needed. One writer
    /// at a time.
    Write,
    /// Like `Write`, after deleting everything the knowledge base held (to
    /// change its embedder).
    Rebuild,
}

/// Where a knowledge base is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VectorBackend {
    /// In its directory: the manifest (SQLite), the vectors in the
    /// embedded engine, the BM25 index (tantivy).
    #[default]
    Embedded,
    /// On a Qdrant server or cluster: the vectors and keywords in a
    /// collection, the manifest in a second one beside it. Nothing is kept
    /// on the machine, so any number of processes anywhere open it; a
    /// writer claims it for the length of each change.
    Qdrant(QdrantOptions),
}

impl VectorBackend {
    /// How the manifest records the backend: the collection, not the URL,
    /// since every node of a cluster serves the same collection.
    pub(super) fn recorded(&self) -> String {
        match self {
            VectorBackend::Embedded => "embedded".into(),
            VectorBackend::Qdrant(options) => format!("qdrant collection {}", options.collection),
        }
    }
}

/// How long [`Access::Read`] waits for another process to close the
/// knowledge base.
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// [`IngestOptions::unit_size`] by default: no units. Since searches join
/// neighbouring chunks into passages, units no longer improve hybrid search
/// on questions kb was not tuned on, and they double an ingest's embedding
/// work (docs/knowledge-base.md has the measurements); 120 is a good size
/// where vector search alone matters.
pub const DEFAULT_UNIT_SIZE: usize = 0;

/// Settings of an ingestion.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Which files to read, and how.
    pub loader: DirectoryLoader,
    /// Chunk size in characters.
    pub chunk_size: usize,
    /// Characters shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Remove the files under the given folders that no longer exist.
    pub prune: bool,
    /// Chunks embedded and committed together.
    pub batch_chunks: usize,
    /// Largest unit in characters: each chunk is also embedded in units of
    /// about a sentence, which lead searches to the chunk (small-to-big).
    /// 0 (the default) embeds whole chunks only.
    pub unit_size: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            loader: DirectoryLoader::new(),
            chunk_size: 400,
            chunk_overlap: 60,
            prune: false,
            batch_chunks: 256,
            unit_size: DEFAULT_UNIT_SIZE,
        }
    }
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files seen.
    pub files: usize,
    /// New files ingested.
    pub added: usize,
    /// Changed files ingested again.
    pub updated: usize,
    /// Files already up to date.
    pub unchanged: usize,
    /// Files removed (`prune`).
    pub removed: usize,
    /// Chunks written.
    pub chunks_written: usize,
    /// Chunks removed.
    pub chunks_removed: usize,
    /// Files or records skipped, with the reason.
    pub skipped: Vec<Skipped>,
    /// Chunks the interrupted run before this one had left and this run removed.
    pub recovered: usize,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Time spent embedding.
    #[serde(serialize_with = "seconds")]
    pub embedding_time: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Progress of an ingestion, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` files checked.
    Files {
        /// Files checked.
        done: usize,
        /// Files to check.
        total: usize,
    },
    /// `done` of `total` chunks of the current batch embedded.
    Embedding {
        /// Chunks embedded.
        done: usize,
        /// Chunks in the batch.
        total: usize,
    },
}
