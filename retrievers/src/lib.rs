//! Loaders, splitters, vector stores, BM25 and hybrid retrieval: the knowledge base.
//!
//! # Core concepts
//! - [`DirectoryLoader`] reads Markdown, text, HTML, JSON, JSON Lines and CSV files
//!   and folders into documents, decoding legacy encodings such as GBK and
//!   skipping, with a reason, whatever it cannot read.
//! - [`RecursiveSplitter`] cuts text at the coarsest boundary that makes pieces
//!   small enough — paragraphs, lines, Chinese and Western sentences, clauses,
//!   words, characters — and packs them into chunks with optional overlap.
//! - [`MarkdownSplitter`] splits at headings first and records each chunk's
//!   heading path (`# Guide > ## Install`).
//! - [`Split`] is a chunk of text with its byte span in the document.
//!
//! ```
//! use kb_retrievers::RecursiveSplitter;
//! let splits = RecursiveSplitter::new(200, 20).split("检索增强生成。Retrieval-augmented generation.");
//! assert_eq!(splits.len(), 1);
//! ```

mod error;
mod loader;
mod splitter;

pub use error::{Error, Result};
pub use loader::{CsvMode, DirectoryLoader, LoadReport, Skipped};
pub use splitter::{LengthFn, MarkdownSplitter, RecursiveSplitter, Split};
