//! [`FileRecord`]: what the manifest knows of one ingested file.

/// A file as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Where the file is (see `KnowledgeBase` for how sources are named).
    pub source: String,
    /// SHA-256 of its documents' contents.
    pub hash: String,
    /// Its size in bytes when ingested.
    pub size: u64,
    /// Its modification time when ingested (ns since the epoch).
    pub mtime_ns: u64,
    /// The title of its first document.
    pub title: String,
    /// Documents read from it (records of JSON/CSV files count separately).
    pub documents: usize,
    /// The ids of its chunks.
    pub chunk_ids: Vec<String>,
    /// When it was ingested (seconds since the epoch).
    pub ingested_at: u64,
}
