//! The manifest: the source of truth of what a knowledge base holds (each
//! file's content hash and chunk ids, the embedder, the term pairs, and the
//! chunk ids a change may have left in the indexes), behind one
//! [`ManifestStore`](store::ManifestStore) seam: in SQLite in the knowledge
//! base's directory, or on the Qdrant server beside the vectors, where a
//! lease keeps a second writer out.

pub(crate) mod lease;
pub(crate) mod qdrant;
mod record;
pub(crate) mod sqlite;
pub(crate) mod store;

pub use record::FileRecord;
