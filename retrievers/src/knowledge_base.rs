//! [`KnowledgeBase`]: one directory holding a manifest, a vector store and a
//! BM25 index, kept consistent through incremental, crash-safe ingestion.
//!
//! # Layout
//! `DIR/manifest.db` (SQLite), `DIR/vectors/` (qdrant-edge), `DIR/bm25/`
//! (tantivy), `DIR/lock`.
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

use std::collections::{HashMap, HashSet};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kb_core::{Chunk, Document, Embedder, Filter, StoredIds, Unit, VectorStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bm25::Bm25Index;
use crate::error::{Error, Result};
use crate::glossary::{self, Glossary, TermPair};
use crate::hybrid::{
    Bm25Retriever, Fusion, Hit, HybridRetriever, Rerank, SearchMode, VectorRetriever,
};
use crate::loader::{DirectoryLoader, FileEntry, Skipped};
use crate::manifest::{FileRecord, Manifest};
use crate::snapshot::Snapshots;
use crate::splitter::{MarkdownSplitter, RecursiveSplitter};
use crate::store::edge::EdgeStore;

/// How a knowledge base is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Search only; fails if the knowledge base does not exist. The vector
    /// engine holds its files alone, so one process at a time opens a
    /// knowledge base: a reader waits up to [`READ_WAIT`] for the one before
    /// it (another `kb search` finishes in well under a second), then fails
    /// with [`Error::Busy`].
    Read,
    /// Ingest and delete; creates the knowledge base if needed. One writer
    /// at a time.
    Write,
    /// Like `Write`, after deleting everything the knowledge base held (to
    /// change its embedder).
    Rebuild,
}

/// How long [`Access::Read`] waits for another process to close the
/// knowledge base.
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// [`IngestOptions::unit_size`] by default.
pub const DEFAULT_UNIT_SIZE: usize = 120;

/// Settings of an ingestion.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Which files to read, and how.
    pub loader: DirectoryLoader,
    /// Chunk size in characters.
    pub chunk_size: usize,
    /// Characters shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Remove the files under the given folders that no longer exist.
    pub prune: bool,
    /// Chunks embedded and committed together.
    pub batch_chunks: usize,
    /// Largest unit in characters: each chunk is also embedded in units of
    /// about a sentence, which lead searches to the chunk (small-to-big).
    /// 0 embeds whole chunks only.
    pub unit_size: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            loader: DirectoryLoader::new(),
            chunk_size: 400,
            chunk_overlap: 60,
            prune: false,
            batch_chunks: 256,
            unit_size: DEFAULT_UNIT_SIZE,
        }
    }
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files seen.
    pub files: usize,
    /// New files ingested.
    pub added: usize,
    /// Changed files ingested again.
    pub updated: usize,
    /// Files already up to date.
    pub unchanged: usize,
    /// Files removed (`prune`).
    pub removed: usize,
    /// Chunks written.
    pub chunks_written: usize,
    /// Chunks removed.
    pub chunks_removed: usize,
    /// Files or records skipped, with the reason.
    pub skipped: Vec<Skipped>,
    /// Chunks the interrupted run before this one had left and this run removed.
    pub recovered: usize,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Time spent embedding.
    #[serde(serialize_with = "seconds")]
    pub embedding_time: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Progress of an ingestion, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` files checked.
    Files {
        /// Files checked.
        done: usize,
        /// Files to check.
        total: usize,
    },
    /// `done` of `total` chunks of the current batch embedded.
    Embedding {
        /// Chunks embedded.
        done: usize,
        /// Chunks in the batch.
        total: usize,
    },
}

/// Counts of a knowledge base.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The directory.
    pub dir: PathBuf,
    /// The embedder it was built with.
    pub embedder: String,
    /// The vectors' dimension.
    pub dimension: usize,
    /// Files ingested.
    pub files: usize,
    /// Documents ingested.
    pub documents: usize,
    /// Chunks in the manifest.
    pub chunks: usize,
    /// Chunk vectors in the vector store.
    pub vectors: usize,
    /// Unit vectors in the vector store (see [`IngestOptions::unit_size`]).
    pub unit_vectors: usize,
    /// Chunks in the BM25 index.
    pub bm25_chunks: usize,
    /// Bilingual term pairs in the glossary (see [`glossary`](crate::glossary)).
    pub glossary_terms: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// What [`KnowledgeBase::check`] found: each index against the manifest.
///
/// Ids are chunk ids. An interrupted change is not an inconsistency: the
/// next writer repairs it (`interrupted` says one is waiting).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    /// Files in the manifest.
    pub files: usize,
    /// Chunks in the manifest.
    pub chunks: usize,
    /// Whether an interrupted change waits for the next writer to repair it.
    pub interrupted: bool,
    /// Chunks of the manifest without a vector.
    pub missing_vectors: Vec<String>,
    /// Vectors of chunks the manifest does not hold.
    pub extra_vectors: Vec<String>,
    /// Unit vectors whose chunk the manifest does not hold.
    pub orphan_units: Vec<String>,
    /// Chunks of the manifest missing from the BM25 index.
    pub missing_bm25: Vec<String>,
    /// BM25 entries of chunks the manifest does not hold.
    pub extra_bm25: Vec<String>,
    /// Chunks the BM25 index holds more than once.
    pub duplicate_bm25: Vec<String>,
}

impl Check {
    /// Whether both indexes hold exactly the manifest's chunks, once each.
    pub fn is_consistent(&self) -> bool {
        self.missing_vectors.is_empty()
            && self.extra_vectors.is_empty()
            && self.orphan_units.is_empty()
            && self.missing_bm25.is_empty()
            && self.extra_bm25.is_empty()
            && self.duplicate_bm25.is_empty()
    }
}

/// A file's new state, waiting to be committed.
struct FileWork {
    record: FileRecord,
    chunks: Vec<Chunk>,
    /// The term pairs its chunks define.
    terms: Vec<TermPair>,
    old_ids: Vec<String>,
    is_new: bool,
}

/// A knowledge base in a directory: see the [module docs](self).
pub struct KnowledgeBase {
    dir: PathBuf,
    root: PathBuf,
    manifest: Mutex<Manifest>,
    vectors: Arc<dyn VectorStore>,
    bm25: Arc<Bm25Index>,
    embedder: Arc<dyn Embedder>,
    fusion: Fusion,
    rerank: Option<Rerank>,
    /// The term pairs of its files, for cross-language query expansion.
    glossary: RwLock<Arc<Glossary>>,
    expand_queries: bool,
    writable: bool,
    /// Searches read between changes, not inside one.
    snapshots: Arc<Snapshots>,
    _lock: File,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("dir", &self.dir)
            .field("embedder", &self.embedder.id())
            .finish_non_exhaustive()
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Free space a change needs on the knowledge base's disk: the vector store
/// maps 32 MiB pages and log segments into memory, and writing a mapped page
/// that the disk cannot hold kills the process (SIGBUS) instead of failing.
pub const MIN_FREE_SPACE: u64 = 128 << 20;

/// [`Error::DiskFull`] unless the disk holding `dir` has
/// [`MIN_FREE_SPACE`] free. Space that cannot be measured passes.
fn ensure_space(dir: &Path) -> Result<()> {
    match fs4::available_space(dir) {
        Ok(available) if available < MIN_FREE_SPACE => Err(Error::DiskFull {
            dir: dir.to_path_buf(),
            available,
            needed: MIN_FREE_SPACE,
        }),
        _ => Ok(()),
    }
}

/// [`Error::ReadOnly`] when `e` says `dir` may not be written, else what
/// `io` makes of it.
fn read_only(dir: &Path, action: &'static str, path: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Error::ReadOnly(dir.to_path_buf())
        }
        _ => io(action, path)(e),
    }
}

impl KnowledgeBase {
    /// Opens the knowledge base in `dir` with `embedder`.
    ///
    /// Fails clearly when another process writes to it, when it was built
    /// with another embedder (id or dimension), or, for [`Access::Read`],
    /// when it does not exist. A writer first removes what an interrupted
    /// run left behind.
    pub fn open(dir: &Path, embedder: Arc<dyn Embedder>, access: Access) -> Result<Self> {
        let manifest_path = dir.join("manifest.db");
        if access == Access::Read && !Self::exists(dir) {
            return Err(Error::Missing(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|e| read_only(dir, "creating", dir, e))?;
        let lock_path = dir.join("lock");
        // Even a search writes (the vector store locks its log), so a
        // directory this user may not write is refused up front.
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| read_only(dir, "opening", &lock_path, e))?;
        // Qdrant's engine locks its write-ahead log even to read, so readers
        // take the lock alone too; they queue briefly instead of failing.
        let deadline = Instant::now()
            + if access == Access::Read {
                READ_WAIT
            } else {
                Duration::ZERO
            };
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Busy(format!(
                        "{} is in use by another kb process (an ingest, or a running \
                         `kb serve`: ask it over HTTP instead); try again when it finishes",
                        dir.display(),
                    )));
                }
                Err(TryLockError::Error(e)) => return Err(io("locking", &lock_path)(e)),
            }
        }
        if access == Access::Rebuild {
            for part in ["manifest.db", "manifest.db-wal", "manifest.db-shm"] {
                let p = dir.join(part);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(io("removing", &p))?;
                }
            }
            for part in ["vectors", "bm25"] {
                let p = dir.join(part);
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(io("removing", &p))?;
                }
            }
        }
        // Opening the vector store writes too (a fresh log segment).
        ensure_space(dir)?;
        let manifest = Manifest::open(&manifest_path)?;
        let (id, dimension) = (embedder.id().to_string(), embedder.dimension());
        match (manifest.meta("embedder")?, manifest.meta("dimension")?) {
            (Some(built_with), Some(built_dimension)) => {
                let built_dimension = built_dimension.parse().unwrap_or(0);
                if built_with != id || built_dimension != dimension {
                    return Err(Error::EmbedderMismatch {
                        built_with,
                        built_dimension,
                        requested: id,
                        requested_dimension: dimension,
                    });
                }
            }
            _ => {
                manifest.set_meta("embedder", &id)?;
                manifest.set_meta("dimension", &dimension.to_string())?;
            }
        }
        let vectors: Arc<dyn VectorStore> =
            Arc::new(EdgeStore::open(&dir.join("vectors"), dimension)?);
        let bm25 = Arc::new(Bm25Index::open(&dir.join("bm25"))?);
        let glossary = load_glossary(&manifest, &bm25, access != Access::Read)?;
        let root = dir
            .canonicalize()
            .map_err(io("resolving", dir))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let kb = KnowledgeBase {
            dir: dir.to_path_buf(),
            root,
            manifest: Mutex::new(manifest),
            vectors,
            bm25,
            embedder,
            fusion: Fusion::default(),
            rerank: None,
            glossary: RwLock::new(Arc::new(glossary)),
            expand_queries: true,
            writable: access != Access::Read,
            snapshots: Arc::default(),
            _lock: lock,
        };
        Ok(kb)
    }

    /// Whether `dir` holds a knowledge base.
    pub fn exists(dir: &Path) -> bool {
        dir.join("manifest.db").is_file()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Sets how hybrid search fuses its two rankings.
    pub fn set_fusion(&mut self, fusion: Fusion) {
        self.fusion = fusion;
    }

    /// Whether searches add the other language's name of the glossary terms
    /// a query contains (on by default; see [`glossary`](crate::glossary)).
    pub fn set_query_expansion(&mut self, on: bool) {
        self.expand_queries = on;
    }

    /// The term pairs the knowledge base's files define.
    pub fn glossary(&self) -> Arc<Glossary> {
        match self.glossary.read() {
            Ok(glossary) => glossary.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn reload_glossary(&self) -> Result<()> {
        let fresh = Arc::new(Glossary::new(self.manifest()?.terms()?));
        match self.glossary.write() {
            Ok(mut glossary) => *glossary = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Sets the reranker that reorders the best hits of every search (none
    /// by default).
    pub fn set_rerank(&mut self, rerank: Option<Rerank>) {
        self.rerank = rerank;
    }

    fn manifest(&self) -> Result<MutexGuard<'_, Manifest>> {
        self.manifest
            .lock()
            .map_err(|_| Error::Index("the manifest lock is poisoned".into()))
    }

    /// How a file is named in the knowledge base: its path relative to the
    /// folder that holds the knowledge-base directory when it is inside it
    /// (`docs/guide.md` for `./.kb`), otherwise its absolute path.
    pub fn source_name(&self, path: &Path) -> String {
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let shown = absolute.strip_prefix(&self.root).unwrap_or(&absolute);
        shown.to_string_lossy().replace('\\', "/")
    }

    /// Removes from both indexes what an interrupted change left behind.
    ///
    /// Locks are taken in one order everywhere: the snapshot lock, then the
    /// manifest.
    async fn recover(&self) -> Result<usize> {
        let orphans = {
            let manifest = self.manifest()?;
            if !manifest.has_pending()? {
                return Ok(0);
            }
            manifest.orphans()?
        };
        ensure_space(&self.dir)?;
        let _change = self.snapshots.write().await;
        self.remove_chunks(&orphans).await?;
        self.manifest()?.clear_pending()?;
        tracing::info!(
            orphans = orphans.len(),
            "recovered from an interrupted ingestion"
        );
        Ok(orphans.len())
    }

    /// Removes chunks from both indexes, durably (inside a change).
    async fn remove_chunks(&self, ids: &[String]) -> Result<()> {
        self.vectors.delete(ids).await?;
        let removed = ids.to_vec();
        self.on_bm25(move |bm25| {
            bm25.delete(&removed)?;
            bm25.commit()
        })
        .await?;
        Ok(self.vectors.flush().await?)
    }

    /// Runs `work` on the BM25 index on one of tokio's blocking threads (it
    /// reads and writes files).
    async fn on_bm25<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Bm25Index) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let bm25 = Arc::clone(&self.bm25);
        tokio::task::spawn_blocking(move || work(&bm25))
            .await
            .map_err(|e| Error::Index(format!("BM25 index task failed: {e}")))?
    }

    fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "the knowledge base was opened for reading".into(),
            ))
        }
    }

    /// Ingests files and folders: new and changed files are read, split,
    /// embedded and indexed; unchanged ones (same size and modification
    /// time, or same content) are skipped.
    pub async fn ingest(
        &self,
        paths: &[PathBuf],
        options: &IngestOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<IngestReport> {
        self.require_writable()?;
        let started = Instant::now();
        let mut report = IngestReport {
            recovered: self.recover().await?,
            ..IngestReport::default()
        };
        let mut entries: Vec<(FileEntry, String)> = Vec::new();
        let mut prune_roots: Vec<String> = Vec::new();
        for path in paths {
            let (files, skipped) = options.loader.files(path)?;
            report.skipped.extend(skipped);
            if path.is_dir() {
                let mut root = self.source_name(path);
                if !root.is_empty() && !root.ends_with('/') {
                    root.push('/');
                }
                prune_roots.push(root);
            }
            for file in files {
                let source = self.source_name(&file.path);
                entries.push((file, source));
            }
        }
        report.files = entries.len();
        let splitter = MarkdownSplitter::with_splitter(RecursiveSplitter::new(
            options.chunk_size.max(1),
            options.chunk_overlap.min(options.chunk_size / 2),
        ));
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch: Vec<FileWork> = Vec::new();
        let mut batch_chunks = 0;
        for (i, (file, source)) in entries.iter().enumerate() {
            progress(Progress::Files {
                done: i,
                total: entries.len(),
            });
            if !seen.insert(source.clone()) {
                continue;
            }
            let existing = self.manifest()?.file(source)?;
            if let Some(record) = &existing
                && record.size == file.size
                && record.mtime_ns == file.mtime_ns
            {
                report.unchanged += 1;
                continue;
            }
            let loaded = options.loader.load_entry(file);
            let unreadable = loaded.documents.is_empty() && !loaded.skipped.is_empty();
            report
                .skipped
                .extend(loaded.skipped.into_iter().map(|mut s| {
                    s.path = format!(
                        "{source}{}",
                        s.path.strip_prefix(&file.relative).unwrap_or("")
                    );
                    s
                }));
            if unreadable {
                // Keep what an earlier, readable version of the file gave.
                continue;
            }
            let hash = content_hash(&loaded.documents);
            if let Some(record) = &existing
                && record.hash == hash
            {
                self.manifest()?.touch(source, file.size, file.mtime_ns)?;
                report.unchanged += 1;
                continue;
            }
            let chunks = split(&loaded.documents, source, &file.relative, &splitter);
            let title = loaded
                .documents
                .first()
                .and_then(|d| d.metadata.get("title"))
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string();
            batch_chunks += chunks.len();
            batch.push(FileWork {
                record: FileRecord {
                    source: source.clone(),
                    hash,
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    title,
                    documents: loaded.documents.len(),
                    chunk_ids: chunks.iter().map(|c| c.id.clone()).collect(),
                    ingested_at: now(),
                },
                terms: chunks
                    .iter()
                    .flat_map(|c| glossary::mine(&c.text))
                    .collect(),
                chunks,
                old_ids: existing
                    .as_ref()
                    .map(|r| r.chunk_ids.clone())
                    .unwrap_or_default(),
                is_new: existing.is_none(),
            });
            if batch_chunks >= options.batch_chunks {
                self.commit_batch(std::mem::take(&mut batch), options, &mut report, progress)
                    .await?;
                batch_chunks = 0;
            }
        }
        self.commit_batch(batch, options, &mut report, progress)
            .await?;
        progress(Progress::Files {
            done: entries.len(),
            total: entries.len(),
        });
        if options.prune && !prune_roots.is_empty() {
            let gone: Vec<String> = self
                .manifest()?
                .files()?
                .into_iter()
                .map(|f| f.source)
                .filter(|s| !seen.contains(s) && prune_roots.iter().any(|r| s.starts_with(r)))
                .collect();
            let (files, chunks) = self.remove_sources(&gone).await?;
            report.removed += files;
            report.chunks_removed += chunks;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn commit_batch(
        &self,
        batch: Vec<FileWork>,
        options: &IngestOptions,
        report: &mut IngestReport,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Only chunks not already indexed need embedding: an id is a hash of
        // the chunk's content and place.
        let mut to_write: Vec<Chunk> = Vec::new();
        let mut to_remove: Vec<String> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        for work in &batch {
            let old: HashSet<&String> = work.old_ids.iter().collect();
            let new: HashSet<&String> = work.record.chunk_ids.iter().collect();
            to_write.extend(work.chunks.iter().filter(|c| !old.contains(&c.id)).cloned());
            to_remove.extend(work.old_ids.iter().filter(|id| !new.contains(id)).cloned());
            touched.extend(work.old_ids.iter().cloned());
            touched.extend(work.record.chunk_ids.iter().cloned());
        }
        let embed_started = Instant::now();
        let units = units_of(&to_write, options.unit_size);
        let mut texts: Vec<&str> = to_write.iter().map(|c| c.text.as_str()).collect();
        texts.extend(units.iter().map(|(_, _, embedded)| embedded.as_str()));
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        for part in texts.chunks(32) {
            let embedded = self
                .embedder
                .embed_documents(part)
                .await
                .map_err(|e| Error::Embedding(e.to_string()))?;
            vectors.extend(embedded);
            progress(Progress::Embedding {
                done: vectors.len(),
                total: texts.len(),
            });
        }
        let unit_vectors = vectors.split_off(to_write.len());
        let units: Vec<Unit<'_>> = units
            .iter()
            .map(|(chunk, n, text)| Unit {
                chunk: &to_write[*chunk],
                n: *n,
                text,
            })
            .collect();
        report.embedding_time += embed_started.elapsed();

        let sources: Vec<&str> = batch.iter().map(|w| w.record.source.as_str()).collect();
        ensure_space(&self.dir)?;
        let change = self.snapshots.write().await;
        self.manifest()?.begin_change(&sources, &touched)?;
        self.vectors.delete(&to_remove).await?;
        self.vectors.upsert(&to_write, &vectors).await?;
        self.vectors.upsert_units(&units, &unit_vectors).await?;
        let (removed, written) = (to_remove.clone(), to_write.clone());
        self.on_bm25(move |bm25| {
            bm25.delete(&removed)?;
            bm25.upsert(&written)?;
            bm25.commit()
        })
        .await?;
        self.vectors.flush().await?;
        let records: Vec<FileRecord> = batch.iter().map(|w| w.record.clone()).collect();
        let terms: Vec<(String, TermPair)> = batch
            .iter()
            .flat_map(|w| w.terms.iter().map(|t| (w.record.source.clone(), t.clone())))
            .collect();
        self.manifest()?.commit_change(&records, &terms)?;
        self.reload_glossary()?;
        drop(change);

        for work in &batch {
            if work.is_new {
                report.added += 1;
            } else {
                report.updated += 1;
            }
        }
        report.chunks_written += to_write.len();
        report.chunks_removed += to_remove.len();
        Ok(())
    }

    /// Removes files (by source name, as [`files`](Self::files) lists them)
    /// and their chunks. Returns (files, chunks) removed.
    pub async fn delete(&self, sources: &[String]) -> Result<(usize, usize)> {
        self.require_writable()?;
        self.recover().await?;
        self.remove_sources(sources).await
    }

    async fn remove_sources(&self, sources: &[String]) -> Result<(usize, usize)> {
        let mut ids = Vec::new();
        let mut found = Vec::new();
        {
            let manifest = self.manifest()?;
            for source in sources {
                if let Some(record) = manifest.file(source)? {
                    ids.extend(record.chunk_ids);
                    found.push(source.as_str());
                }
            }
        }
        if found.is_empty() {
            return Ok((0, 0));
        }
        ensure_space(&self.dir)?;
        let _change = self.snapshots.write().await;
        self.manifest()?.begin_change(&found, &ids)?;
        self.remove_chunks(&ids).await?;
        self.manifest()?.commit_change(&[], &[])?;
        self.reload_glossary()?;
        Ok((found.len(), ids.len()))
    }

    /// Every ingested file.
    pub fn files(&self) -> Result<Vec<FileRecord>> {
        self.manifest()?.files()
    }

    /// Counts and sizes.
    pub async fn stats(&self) -> Result<Stats> {
        let (vectors, units) = self.vectors.counts().await?;
        let manifest = self.manifest()?;
        let files = manifest.files()?;
        Ok(Stats {
            dir: self.dir.clone(),
            embedder: self.embedder.id().to_string(),
            dimension: self.embedder.dimension(),
            files: files.len(),
            documents: files.iter().map(|f| f.documents).sum(),
            chunks: manifest.chunk_count()?,
            vectors,
            unit_vectors: units,
            bm25_chunks: self.bm25.count(),
            glossary_terms: self.glossary().len(),
            disk_bytes: disk_usage(&self.dir),
        })
    }

    /// Compares both indexes with the manifest, chunk by chunk; changes
    /// nothing. An interrupted change's leftovers count as inconsistent
    /// until a writer (the next ingest) removes them.
    pub async fn check(&self) -> Result<Check> {
        let _view = self.snapshots.read().await;
        let (files, ids, interrupted) = {
            let manifest = self.manifest()?;
            (
                manifest.files()?.len(),
                manifest.all_chunk_ids()?,
                manifest.has_pending()?,
            )
        };
        let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let StoredIds {
            chunks: vectors,
            units,
        } = self.vectors.ids().await?;
        let bm25 = self.on_bm25(|bm25| bm25.ids()).await?;
        let missing = |found: &[String]| -> Vec<String> {
            let found: HashSet<&str> = found.iter().map(String::as_str).collect();
            let mut missing: Vec<String> = expected
                .iter()
                .filter(|id| !found.contains(*id))
                .map(|id| id.to_string())
                .collect();
            missing.sort();
            missing
        };
        let extra = |found: &[String]| -> Vec<String> {
            let mut extra: Vec<String> = found
                .iter()
                .filter(|id| !expected.contains(id.as_str()))
                .cloned()
                .collect();
            extra.sort();
            extra.dedup();
            extra
        };
        let mut seen = HashSet::new();
        let mut duplicate_bm25: Vec<String> = bm25
            .iter()
            .filter(|id| !seen.insert(id.as_str()))
            .cloned()
            .collect();
        duplicate_bm25.sort();
        duplicate_bm25.dedup();
        Ok(Check {
            files,
            chunks: expected.len(),
            interrupted,
            missing_vectors: missing(&vectors),
            extra_vectors: extra(&vectors),
            orphan_units: extra(&units),
            missing_bm25: missing(&bm25),
            extra_bm25: extra(&bm25),
            duplicate_bm25,
        })
    }

    /// Builds the vector index (HNSW) now; worthwhile after large ingests.
    pub async fn optimize(&self) -> Result<bool> {
        self.require_writable()?;
        Ok(self.vectors.optimize().await?)
    }

    /// A retriever over this knowledge base, restricted to `filter`.
    pub fn retriever(&self, filter: Option<Filter>) -> HybridRetriever {
        HybridRetriever::new(
            VectorRetriever::new(self.embedder.clone(), self.vectors.clone()),
            Bm25Retriever::new(self.bm25.clone()),
            self.fusion,
        )
        .with_rerank(self.rerank.clone())
        .with_glossary(self.expand_queries.then(|| self.glossary()))
        .with_filter(filter)
        .with_snapshots(self.snapshots.clone())
    }

    /// The `k` best chunks for `query`, with their rank in each index.
    pub async fn search(
        &self,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
        mode: SearchMode,
    ) -> kb_core::Result<Vec<Hit>> {
        self.retriever(filter.cloned()).search(query, k, mode).await
    }
}

/// The glossary recorded in the manifest. A knowledge base built before
/// glossaries existed gets one mined from its stored chunks, kept when it is
/// opened for writing.
fn load_glossary(manifest: &Manifest, bm25: &Bm25Index, writable: bool) -> Result<Glossary> {
    const MINED: &str = "glossary";
    if manifest.meta(MINED)?.is_some() {
        return Ok(Glossary::new(manifest.terms()?));
    }
    let terms: Vec<(String, TermPair)> = bm25
        .chunks()?
        .iter()
        .flat_map(|chunk| {
            let source = chunk
                .metadata
                .get("source")
                .and_then(|s| s.as_str())
                .unwrap_or(&chunk.doc_id)
                .to_string();
            glossary::mine(&chunk.text)
                .into_iter()
                .map(move |pair| (source.clone(), pair))
        })
        .collect();
    if writable {
        manifest.add_terms(&terms)?;
        manifest.set_meta(MINED, "1")?;
    }
    Ok(Glossary::new(terms.into_iter().map(|(_, pair)| pair)))
}

/// The units of each chunk as (chunk index, unit number, text to embed):
/// pieces of at most `unit_size` characters cut at sentence boundaries. A
/// chunk that makes only one unit has none: its own vector serves. (Units
/// are embedded without the chunk's heading path: on the sample corpus the
/// path made them worse, since `#` comments in code read as headings.)
fn units_of(chunks: &[Chunk], unit_size: usize) -> Vec<(usize, usize, String)> {
    if unit_size == 0 {
        return Vec::new();
    }
    let splitter = RecursiveSplitter::new(unit_size, 0);
    let mut units = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let pieces = splitter.split(&chunk.text);
        if pieces.len() < 2 {
            continue;
        }
        for (n, piece) in pieces.into_iter().enumerate() {
            units.push((i, n, piece.text));
        }
    }
    units
}

/// SHA-256 over a file's documents, as they were read.
fn content_hash(documents: &[Document]) -> String {
    let mut hasher = Sha256::new();
    for d in documents {
        hasher.update((d.id.len() as u64).to_le_bytes());
        hasher.update(d.id.as_bytes());
        hasher.update((d.text.len() as u64).to_le_bytes());
        hasher.update(d.text.as_bytes());
        if let Some(title) = d.metadata.get("title").and_then(|t| t.as_str()) {
            hasher.update(title.as_bytes());
        }
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chunks of a file's documents, ids and metadata in the knowledge
/// base's naming (`source`, `doc_id` = source plus the record suffix).
fn split(
    documents: &[Document],
    source: &str,
    relative: &str,
    splitter: &MarkdownSplitter,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for document in documents {
        let suffix = document.id.strip_prefix(relative).unwrap_or("");
        let doc_id = format!("{source}{suffix}");
        let title = document.metadata.get("title").cloned();
        for (ordinal, split) in splitter.split(&document.text).into_iter().enumerate() {
            let mut chunk = Chunk::new(doc_id.clone(), ordinal as u32, split.text.clone());
            chunk.metadata.insert("source".into(), source.into());
            if let Some(title) = &title {
                chunk.metadata.insert("title".into(), title.clone());
            }
            if !split.headings.is_empty() {
                chunk
                    .metadata
                    .insert("headings".into(), split.heading_path().into());
            }
            chunk.metadata.insert("start".into(), split.start.into());
            chunk.metadata.insert("end".into(), split.end.into());
            chunks.push(chunk);
        }
    }
    chunks
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn disk_usage(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Chunk ids by source, for tests and tools that compare two knowledge bases.
pub fn chunk_ids_by_source(kb: &KnowledgeBase) -> Result<HashMap<String, Vec<String>>> {
    let manifest = kb.manifest()?;
    let mut out = HashMap::new();
    for file in manifest.files()? {
        let mut ids = manifest.chunk_ids(&file.source)?;
        ids.sort();
        out.insert(file.source, ids);
    }
    Ok(out)
}
