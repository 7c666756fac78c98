//! Loaders, splitters, vector stores, BM25 and hybrid retrieval: the knowledge base.
//!
//! # Core concepts
//! - [`DirectoryLoader`] reads Markdown, text, HTML, JSON, JSON Lines, CSV, PDF and DOCX files
//!   and folders into documents, decoding legacy encodings such as GBK and
//!   skipping, with a reason, whatever it cannot read.
//! - [`RecursiveSplitter`] cuts text at the coarsest boundary that makes pieces
//!   small enough — paragraphs, lines, Chinese and Western sentences, clauses,
//!   words, characters — and packs them into chunks with optional overlap.
//! - [`MarkdownSplitter`] splits at headings first and records each chunk's
//!   heading path (`# Guide > ## Install`).
//! - [`Split`] is a chunk of text with its byte span in the document.
//! - [`glossary`] collects the bilingual terms a corpus defines
//!   (`张量并行 (Tensor Parallelism)`) to search across languages.
//!
//! ```
//! use kb_retrievers::RecursiveSplitter;
//! let splits = RecursiveSplitter::new(200, 20).split("检索增强生成。Retrieval-augmented generation.");
//! assert_eq!(splits.len(), 1);
//! ```

// The tests' shared support code names this crate as users do.
#[cfg(test)]
extern crate self as kb_retrievers;

mod adjacent;
mod blocking;
mod bm25;
mod error;
pub mod glossary;
mod hybrid;
mod keywords;
mod knowledge_base;
mod loader;
mod manifest;
mod snapshot;
mod splitter;
mod store;

pub use adjacent::merge_adjacent;
pub use bm25::{Bm25Index, bm25_terms};
pub use error::{Error, Result};
pub use hybrid::{
    Bm25Retriever, Fusion, FusionMethod, Hit, HybridRetriever, Rank, Rerank, SearchMode,
    VectorRetriever, fuse, rerank_hits,
};
pub use keywords::KeywordIndex;
pub use knowledge_base::{
    Access, Check, DEFAULT_UNIT_SIZE, IngestOptions, IngestReport, KnowledgeBase, MIN_FREE_SPACE,
    Progress, READ_WAIT, Stats, VectorBackend, chunk_ids_by_source,
};
pub use loader::{CsvMode, DirectoryLoader, FileEntry, LoadReport, Skipped};
pub use manifest::FileRecord;
pub use splitter::{LengthFn, MarkdownSplitter, RecursiveSplitter, Split};
pub use store::edge::EdgeStore;
pub use store::payload::{INDEXED_KEYS, UNIT_KEY, point_id, to_qdrant_filter};
pub use store::qdrant::{ClientError, QdrantOptions, QdrantStore, Setup};
