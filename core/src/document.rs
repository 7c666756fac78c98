//! Documents, the chunks they are split into, and scored retrieval hits.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Free-form metadata attached to documents and chunks (source path, title,
/// heading path, span, …). Keys keep their insertion order.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A loaded document: its identity, its text and what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// A stable identifier, usually the source path relative to the ingest root.
    pub id: String,
    /// The full text.
    pub text: String,
    /// Source path, title, mtime, content hash, …
    #[serde(default)]
    pub metadata: Metadata,
}

impl Document {
    /// A document with empty metadata.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            text: text.into(),
            metadata: Metadata::new(),
        }
    }

    /// Adds one metadata entry, by value.
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A piece of a document: the unit that is embedded, indexed and retrieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Deterministic id, see [`Chunk::new`].
    pub id: String,
    /// The [`Document::id`] this chunk comes from.
    pub doc_id: String,
    /// Position of the chunk within its document, from 0.
    pub ordinal: u32,
    /// The text.
    pub text: String,
    /// Source, heading path, span, …
    #[serde(default)]
    pub metadata: Metadata,
}

impl Chunk {
    /// A chunk whose id is derived from `doc_id`, `ordinal` and `text`, so that the
    /// same content always gets the same id and upserts are idempotent.
    ///
    /// ```
    /// use kb_core::Chunk;
    /// let a = Chunk::new("notes.md", 0, "Attention is all you need.");
    /// let b = Chunk::new("notes.md", 0, "Attention is all you need.");
    /// assert_eq!(a.id, b.id);
    /// assert_ne!(a.id, Chunk::new("notes.md", 1, "Attention is all you need.").id);
    /// ```
    pub fn new(doc_id: impl Into<String>, ordinal: u32, text: impl Into<String>) -> Self {
        let doc_id = doc_id.into();
        let text = text.into();
        Chunk {
            id: Self::id_for(&doc_id, ordinal, &text),
            doc_id,
            ordinal,
            text,
            metadata: Metadata::new(),
        }
    }

    /// The deterministic id of a chunk: 32 hex digits (128 bits) of
    /// SHA-256 over the document id, the ordinal and the text.
    pub fn id_for(doc_id: &str, ordinal: u32, text: &str) -> String {
        let mut hasher = Sha256::new();
        // Lengths first, so that ("ab", "c") and ("a", "bc") hash differently.
        hasher.update((doc_id.len() as u64).to_le_bytes());
        hasher.update(doc_id.as_bytes());
        hasher.update(ordinal.to_le_bytes());
        hasher.update(text.as_bytes());
        let digest = hasher.finalize();
        hex(&digest[..16])
    }

    /// Adds one metadata entry, by value.
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A chunk with the score a retriever gave it (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredChunk {
    /// The retrieved chunk.
    pub chunk: Chunk,
    /// The retriever's score; only comparable within one retriever.
    pub score: f32,
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Whether `c` is a CJK ideograph (or a kana/hangul letter): the characters
/// that carry a word each and are written without spaces.
///
/// ```
/// assert!(kb_core::is_cjk('注'));
/// assert!(!kb_core::is_cjk('a'));
/// ```
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_deterministic_and_separate_fields() {
        let a = Chunk::id_for("ab", 0, "c");
        let b = Chunk::id_for("a", 0, "bc");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(a, Chunk::id_for("ab", 0, "c"));
    }

    #[test]
    fn chunk_round_trips_through_json() {
        let chunk = Chunk::new("doc", 3, "文本").with_metadata("source", "doc.md");
        let json = serde_json::to_string(&chunk).expect("serialize");
        let back: Chunk = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, chunk);
    }
}
