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

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The lock between one knowledge base's changes and its searches.
#[derive(Debug, Default)]
pub(crate) struct Snapshots(RwLock<()>);

impl Snapshots {
    /// Held while reading the indexes.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic elsewhere left nothing
        // half-written behind it.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held while applying a change to the indexes.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
