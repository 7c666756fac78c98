//! [`Manifest`]: the manifest in the knowledge base's directory, in
//! SQLite; [`SqliteManifest`] serves it to async code from tokio's blocking
//! threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use rusqlite::{Connection, OptionalExtension, params};

use super::record::FileRecord;
use super::store::ManifestStore;
use crate::blocking::run_blocking;
use crate::error::{Error, Result};
use crate::glossary::TermPair;

/// The manifest database of a knowledge base.
pub(crate) struct Manifest {
    connection: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("path", &self.path)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    title TEXT NOT NULL,
    documents INTEGER NOT NULL,
    ingested_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX IF NOT EXISTS chunks_by_id ON chunks(id);
CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS terms (
    source TEXT NOT NULL,
    latin TEXT NOT NULL,
    cjk TEXT NOT NULL,
    PRIMARY KEY (source, latin, cjk)
);
";

impl Manifest {
    /// Opens (or creates) the manifest at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let error = |e: rusqlite::Error| Error::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let connection = Connection::open(path).map_err(error)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(error)?;
        connection.execute_batch(SCHEMA).map_err(error)?;
        Ok(Manifest {
            connection,
            path: path.to_path_buf(),
        })
    }

    fn error(&self, e: rusqlite::Error) -> Error {
        Error::Manifest {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// A setting of the knowledge base (`embedder`, `dimension`, …).
    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>> {
        self.connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Stores a setting.
    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.connection
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// The record of `source`, if it was ingested.
    pub(crate) fn file(&self, source: &str) -> Result<Option<FileRecord>> {
        let row = self
            .connection
            .query_row(
                "SELECT source, hash, size, mtime_ns, title, documents, ingested_at
                 FROM files WHERE source = ?1",
                [source],
                |r| {
                    Ok(FileRecord {
                        source: r.get(0)?,
                        hash: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get::<_, i64>(3)? as u64,
                        title: r.get(4)?,
                        documents: r.get::<_, i64>(5)? as usize,
                        chunk_ids: Vec::new(),
                        ingested_at: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        match row {
            Some(mut record) => {
                record.chunk_ids = self.chunk_ids(source)?;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    /// The chunk ids of `source`.
    pub(crate) fn chunk_ids(&self, source: &str) -> Result<Vec<String>> {
        self.strings("SELECT id FROM chunks WHERE source = ?1", [source])
    }

    /// The single text column of a query's rows.
    fn strings<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<Vec<String>> {
        let mut statement = self
            .connection
            .prepare_cached(sql)
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params, |r| r.get(0))
            .map_err(|e| self.error(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.error(e))?;
        Ok(rows)
    }

    /// Every committed chunk id.
    pub(crate) fn all_chunk_ids(&self) -> Result<Vec<String>> {
        self.strings("SELECT id FROM chunks", [])
    }

    /// Every ingested file, without chunk ids, ordered by source.
    pub(crate) fn files(&self) -> Result<Vec<FileRecord>> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT f.source, f.hash, f.size, f.mtime_ns, f.title, f.documents, f.ingested_at,
                        (SELECT COUNT(*) FROM chunks c WHERE c.source = f.source)
                 FROM files f ORDER BY f.source",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |r| {
                let chunks = r.get::<_, i64>(7)? as usize;
                Ok(FileRecord {
                    source: r.get(0)?,
                    hash: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    mtime_ns: r.get::<_, i64>(3)? as u64,
                    title: r.get(4)?,
                    documents: r.get::<_, i64>(5)? as usize,
                    // Placeholder ids: only the count is meaningful here.
                    chunk_ids: vec![String::new(); chunks],
                    ingested_at: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(|e| self.error(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.error(e))?;
        Ok(rows)
    }

    /// Number of committed chunks.
    pub(crate) fn chunk_count(&self) -> Result<usize> {
        self.connection
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.error(e))
    }

    /// Updates a file's size and modification time (its content is unchanged).
    pub(crate) fn touch(&self, source: &str, size: u64, mtime_ns: u64) -> Result<()> {
        self.connection
            .execute(
                "UPDATE files SET size = ?2, mtime_ns = ?3 WHERE source = ?1",
                params![source, size as i64, mtime_ns as i64],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Step one of changing the indexes: in one transaction, records every
    /// chunk id that is about to be written or removed as pending, and
    /// forgets the files `sources` (so that a crash from here on leaves them
    /// un-ingested, to be ingested again).
    pub(crate) fn begin_change(&mut self, sources: &[&str], touched_ids: &[String]) -> Result<()> {
        let path = self.path.clone();
        let error = |e: rusqlite::Error| Error::Manifest {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.connection.transaction().map_err(error)?;
        {
            let mut pending = tx
                .prepare_cached("INSERT OR IGNORE INTO pending (id) VALUES (?1)")
                .map_err(error)?;
            for id in touched_ids {
                pending.execute([id]).map_err(error)?;
            }
            let mut files = tx
                .prepare_cached("DELETE FROM files WHERE source = ?1")
                .map_err(error)?;
            let mut chunks = tx
                .prepare_cached("DELETE FROM chunks WHERE source = ?1")
                .map_err(error)?;
            let mut terms = tx
                .prepare_cached("DELETE FROM terms WHERE source = ?1")
                .map_err(error)?;
            for source in sources {
                files.execute([source]).map_err(error)?;
                chunks.execute([source]).map_err(error)?;
                terms.execute([source]).map_err(error)?;
            }
        }
        tx.commit().map_err(error)
    }

    /// Step two, after the indexes hold the new state: records the files,
    /// their chunks and the term pairs found in them (`(source, pair)`), and
    /// clears the pending ids, in one transaction.
    pub(crate) fn commit_change(
        &mut self,
        files: &[FileRecord],
        terms: &[(String, TermPair)],
    ) -> Result<()> {
        let path = self.path.clone();
        let error = |e: rusqlite::Error| Error::Manifest {
            path: path.clone(),
            message: e.to_string(),
        };
        let tx = self.connection.transaction().map_err(error)?;
        {
            let mut insert_file = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files
                     (source, hash, size, mtime_ns, title, documents, ingested_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(error)?;
            let mut insert_chunk = tx
                .prepare_cached("INSERT OR IGNORE INTO chunks (id, source) VALUES (?1, ?2)")
                .map_err(error)?;
            for f in files {
                insert_file
                    .execute(params![
                        f.source,
                        f.hash,
                        f.size as i64,
                        f.mtime_ns as i64,
                        f.title,
                        f.documents as i64,
                        f.ingested_at as i64
                    ])
                    .map_err(error)?;
                for id in &f.chunk_ids {
                    insert_chunk.execute([id, &f.source]).map_err(error)?;
                }
            }
            let mut insert_term = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO terms (source, latin, cjk) VALUES (?1, ?2, ?3)",
                )
                .map_err(error)?;
            for (source, pair) in terms {
                insert_term
                    .execute([source, &pair.latin, &pair.cjk])
                    .map_err(error)?;
            }
            tx.execute("DELETE FROM pending", []).map_err(error)?;
        }
        tx.commit().map_err(error)
    }

    /// Chunk ids that may be in the indexes but belong to no committed file:
    /// what an interrupted change left behind.
    pub(crate) fn orphans(&self) -> Result<Vec<String>> {
        self.strings(
            "SELECT id FROM pending WHERE id NOT IN (SELECT id FROM chunks)",
            [],
        )
    }

    /// Records term pairs (`(source, pair)`) outside a change: for a
    /// knowledge base built before term pairs were kept.
    pub(crate) fn add_terms(&self, terms: &[(String, TermPair)]) -> Result<()> {
        let mut statement = self
            .connection
            .prepare_cached("INSERT OR IGNORE INTO terms (source, latin, cjk) VALUES (?1, ?2, ?3)")
            .map_err(|e| self.error(e))?;
        for (source, pair) in terms {
            statement
                .execute([source, &pair.latin, &pair.cjk])
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Every term pair of the knowledge base's files.
    pub(crate) fn terms(&self) -> Result<Vec<TermPair>> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT DISTINCT latin, cjk FROM terms")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok(TermPair {
                    latin: r.get(0)?,
                    cjk: r.get(1)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    /// Whether an interrupted change left pending ids.
    pub(crate) fn has_pending(&self) -> Result<bool> {
        self.connection
            .query_row("SELECT EXISTS (SELECT 1 FROM pending)", [], |r| r.get(0))
            .map_err(|e| self.error(e))
    }

    /// Clears the pending ids (after their orphans were removed).
    pub(crate) fn clear_pending(&self) -> Result<()> {
        self.connection
            .execute("DELETE FROM pending", [])
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

/// The SQLite manifest as a [`ManifestStore`]: each call on one of tokio's
/// blocking threads, one at a time.
#[derive(Debug, Clone)]
pub(crate) struct SqliteManifest {
    inner: Arc<Mutex<Manifest>>,
}

impl SqliteManifest {
    pub(crate) fn new(manifest: Manifest) -> Self {
        SqliteManifest {
            inner: Arc::new(Mutex::new(manifest)),
        }
    }

    /// Runs `work` on the manifest off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Manifest) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        run_blocking("a manifest call", move || {
            let mut manifest = inner
                .lock()
                .map_err(|_| Error::Index("the manifest lock is poisoned".into()))?;
            work(&mut manifest)
        })
        .await
    }
}

#[async_trait]
impl ManifestStore for SqliteManifest {
    async fn file(&self, source: &str) -> Result<Option<FileRecord>> {
        let source = source.to_string();
        self.with(move |m| m.file(&source)).await
    }

    async fn files(&self) -> Result<Vec<FileRecord>> {
        self.with(|m| m.files()).await
    }

    async fn chunk_ids_by_source(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.with(|m| {
            let mut by_source = BTreeMap::new();
            for file in m.files()? {
                let mut ids = m.chunk_ids(&file.source)?;
                ids.sort();
                by_source.insert(file.source, ids);
            }
            Ok(by_source)
        })
        .await
    }

    async fn all_chunk_ids(&self) -> Result<Vec<String>> {
        self.with(|m| m.all_chunk_ids()).await
    }

    async fn chunk_count(&self) -> Result<usize> {
        self.with(|m| m.chunk_count()).await
    }

    async fn touch(&self, source: &str, size: u64, mtime_ns: u64) -> Result<()> {
        let source = source.to_string();
        self.with(move |m| m.touch(&source, size, mtime_ns)).await
    }

    async fn begin_change(&self, sources: &[String], touched: &[String]) -> Result<()> {
        let (sources, touched) = (sources.to_vec(), touched.to_vec());
        self.with(move |m| {
            let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
            m.begin_change(&sources, &touched)
        })
        .await
    }

    async fn commit_change(
        &self,
        files: &[FileRecord],
        terms: &[(String, TermPair)],
    ) -> Result<()> {
        let (files, terms) = (files.to_vec(), terms.to_vec());
        self.with(move |m| m.commit_change(&files, &terms)).await
    }

    async fn orphans(&self) -> Result<Vec<String>> {
        self.with(|m| m.orphans()).await
    }

    async fn terms(&self) -> Result<Vec<TermPair>> {
        self.with(|m| m.terms()).await
    }

    async fn has_pending(&self) -> Result<bool> {
        self.with(|m| m.has_pending()).await
    }

    async fn clear_pending(&self) -> Result<()> {
        self.with(|m| m.clear_pending()).await
    }
}
