//! Splitters: documents into chunks small enough to embed and to quote.

mod markdown;
mod recursive;

pub use markdown::MarkdownSplitter;
pub use recursive::{LengthFn, RecursiveSplitter};

/// A chunk of text cut from a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The chunk's text, `document[start..end]`.
    pub text: String,
    /// Byte offset of the chunk in the document.
    pub start: usize,
    /// Byte offset just past the chunk.
    pub end: usize,
    /// The Markdown headings the chunk sits under, outermost first
    /// (`["# Guide", "## Install"]`); empty for plain text.
    pub headings: Vec<String>,
}

impl Split {
    /// The heading path as one line: `# Guide > ## Install`.
    pub fn heading_path(&self) -> String {
        self.headings.join(" > ")
    }
}
