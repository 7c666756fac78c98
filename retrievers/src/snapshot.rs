//! [`Snapshots`]: searches see a knowledge base between changes, never
//! inside one.
//!
//! A change (an ingested batch, a deletion, a recovery) touches two indexes
//! one after the other: the vector store, then the BM25 index. A search
//! running in between would find a changed document's new chunks in one
//! index and its old chunks in the other, or, inside the vector store,
//! neither. So a change holds the write side while it applies, and a search
//! holds the read side while it reads the indexes (not while it embeds its
//! query or reranks, which take longest). Embedding a change's chunks
//! happens before it takes the lock, so searches wait only for the writes.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The lock between one knowledge base's changes and its searches.
#[derive(Debug, Default)]
pub(crate) struct Snapshots(RwLock<()>);

impl Snapshots {
    /// Held while reading the indexes (an async lock: the reads and
    /// writes under it await the stores).
    pub(crate) async fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().await
    }

    /// Held while applying a change to the indexes.
    pub(crate) async fn write(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }
}
