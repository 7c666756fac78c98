//! [`KnowledgeBase`]: one directory holding a manifest, a vector store and a
//! BM25 index, kept consistent through incremental, crash-safe ingestion.
//!
//! # Layout
//! `DIR/manifest.db` (SQLite), `DIR/vectors/` (qdrant-edge), `DIR/bm25/`
//! (tantivy), `DIR/lock`. With [`VectorBackend::Qdrant`] nothing is in
//! `DIR`: the vectors and keywords are in a collection on a Qdrant server,
//! the manifest in the collection `NAME-manifest` beside it, and a lease
//! there (renewed while a change runs, run out when a writer dies) keeps
//! writers one at a time.
//!
//! # Consistency
//! Chunk ids are deterministic, so writing a chunk twice changes nothing. A
//! change to the indexes is bracketed by two manifest transactions: the
//! first records every chunk id about to be written or removed as *pending*
//! and forgets the files concerned; the second, after both indexes are
//! committed, records the files and clears the pending ids. A process killed
//! anywhere in between leaves pending ids; the next writer removes those that
//! belong to no committed file from both indexes, and the forgotten files are
//! ingested again. So a re-run converges to exactly the state of an
//! uninterrupted run: no duplicate, no orphan, no missing chunk.

mod base;
mod consistency;
mod ingest;
mod options;
#[cfg(test)]
mod tests;

pub use base::{KnowledgeBase, MIN_FREE_SPACE};
pub use consistency::{Check, Stats, chunk_ids_by_source};
pub use options::{
    Access, DEFAULT_UNIT_SIZE, IngestOptions, IngestReport, Progress, READ_WAIT, VectorBackend,
};
