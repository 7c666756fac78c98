//! The knowledge base itself: opening and locking its directory, its
//! settings, and searches over it.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kb_core::{Embedder, Filter, VectorStore};
use tokio::sync::OnceCell;

use super::*;
use crate::bm25::Bm25Index;
use crate::error::{Error, Result};
use crate::glossary::{self, Glossary, TermPair};
use crate::hybrid::{
    Bm25Retriever, Fusion, Hit, HybridRetriever, Rerank, SearchMode, VectorRetriever,
};
use crate::keywords::KeywordIndex;
use crate::manifest::FileRecord;
use crate::manifest::lease::Lease;
use crate::manifest::qdrant::ServerManifest;
use crate::manifest::sqlite::{Manifest, SqliteManifest};
use crate::manifest::store::ManifestStore;
use crate::snapshot::Snapshots;
use crate::store::edge::EdgeStore;
use crate::store::qdrant::{QdrantOptions, QdrantStore, Setup};

/// A knowledge base in a directory: see the [module docs](super).
pub struct KnowledgeBase {
    pub(super) dir: PathBuf,
    pub(super) root: PathBuf,
    pub(super) manifest: Arc<dyn ManifestStore>,
    pub(super) vectors: Arc<dyn VectorStore>,
    pub(super) keywords: Arc<dyn KeywordIndex>,
    pub(super) embedder: Arc<dyn Embedder>,
    pub(super) fusion: Fusion,
    pub(super) rerank: Option<Rerank>,
    /// The term pairs of its files, for cross-language query expansion.
    pub(super) glossary: RwLock<Arc<Glossary>>,
    /// Set once the glossary was read (at opening for a local manifest, at
    /// the first search for one on a server).
    pub(super) glossary_read: OnceCell<()>,
    pub(super) expand_queries: bool,
    pub(super) writable: bool,
    /// Searches read between changes, not inside one.
    pub(super) snapshots: Arc<Snapshots>,
    /// For a writer to a knowledge base on a server: the manifest it claims
    /// before each change, and its name as a claimant.
    pub(super) claims: Option<(ServerManifest, String)>,
    /// The directory's lock (none on a server: its lease serves).
    pub(super) _lock: Option<File>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("dir", &self.dir)
            .field("embedder", &self.embedder.id())
            .finish_non_exhaustive()
    }
}

pub(super) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
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
pub(super) fn ensure_space(dir: &Path) -> Result<()> {
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
pub(super) fn read_only(dir: &Path, action: &'static str, path: &Path, e: std::io::Error) -> Error {
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
        Self::open_with(dir, embedder, access, &VectorBackend::Embedded)
    }

    /// Opens the knowledge base in `dir` with `embedder`, its vectors in
    /// `backend`; as [`open`](Self::open) otherwise. A knowledge base
    /// built in one backend is refused in another (until rebuilt there).
    ///
    /// A server is not contacted here: the first search or change does it
    /// (an ingest first of all), and its errors say what to do.
    pub fn open_with(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        access: Access,
        backend: &VectorBackend,
    ) -> Result<Self> {
        match backend {
            VectorBackend::Embedded => Self::open_local(dir, embedder, access),
            VectorBackend::Qdrant(options) => Self::open_on_server(dir, embedder, access, options),
        }
    }

    /// Opens the knowledge base kept in `dir`.
    fn open_local(dir: &Path, embedder: Arc<dyn Embedder>, access: Access) -> Result<Self> {
        let manifest_path = dir.join("manifest.db");
        if access == Access::Read && !Self::exists(dir) {
            return Err(Error::Missing(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|e| read_only(dir, "creating", dir, e))?;
        // Qdrant's engine locks its write-ahead log even to read, so readers
        // take the lock alone too; they queue briefly instead of failing.
        let lock = lock_dir(
            dir,
            if access == Access::Read {
                READ_WAIT
            } else {
                Duration::ZERO
            },
        )?;
        if access == Access::Rebuild {
            remove_local_files(dir)?;
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
        let embedded = VectorBackend::Embedded.recorded();
        let recorded = match manifest.meta("vectors")? {
            Some(recorded) => recorded,
            None => {
                manifest.set_meta("vectors", &embedded)?;
                embedded.clone()
            }
        };
        if recorded != embedded {
            return Err(Error::VectorsElsewhere {
                recorded,
                requested: embedded,
            });
        }
        let vectors = Arc::new(EdgeStore::open(&dir.join("vectors"), dimension)?);
        let bm25 = Bm25Index::open(&dir.join("bm25"))?;
        let glossary = load_glossary(&manifest, &bm25, access != Access::Read)?;
        let root = dir
            .canonicalize()
            .map_err(io("resolving", dir))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(KnowledgeBase {
            dir: dir.to_path_buf(),
            root,
            manifest: Arc::new(SqliteManifest::new(manifest)),
            vectors,
            keywords: Arc::new(bm25),
            embedder,
            fusion: Fusion::default(),
            rerank: None,
            glossary: RwLock::new(Arc::new(glossary)),
            glossary_read: OnceCell::new_with(Some(())),
            expand_queries: true,
            writable: access != Access::Read,
            snapshots: Arc::default(),
            claims: None,
            _lock: Some(lock),
        })
    }

    /// Opens a knowledge base kept on a server: its vectors, keywords and
    /// manifest. Nothing is read or written on this machine: `dir` only
    /// names sources (relative to the folder that holds it), and any number
    /// of processes anywhere may open it; a writer claims it (a lease on
    /// the server) for the length of each change.
    fn open_on_server(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        access: Access,
        options: &QdrantOptions,
    ) -> Result<Self> {
        if Self::exists(dir) {
            if access != Access::Rebuild {
                return Err(Error::InvalidInput(format!(
                    "{} holds a knowledge base kept on this machine (its manifest.db), but \
                     a vector server is set ({}): with one, the whole knowledge base lives \
                     on the server. Use another --kb directory, unset the server \
                     (KB_VECTOR_URL, [vector] url) to use this one, or build this one on \
                     the server with `kb ingest --rebuild PATH...`",
                    dir.display(),
                    options.url
                )));
            }
            // Not from under a process that has it open.
            let _lock = lock_dir(dir, Duration::ZERO)?;
            remove_local_files(dir)?;
        }
        let setup = match access {
            Access::Read => Setup::Existing,
            Access::Write => Setup::Create,
            Access::Rebuild => Setup::Recreate,
        };
        let store = Arc::new(QdrantStore::connect(
            options.clone(),
            embedder.id(),
            embedder.dimension(),
            setup,
        )?);
        let manifest = store.manifest();
        let claims = (access != Access::Read).then(|| (manifest.clone(), claimant()));
        Ok(KnowledgeBase {
            dir: dir.to_path_buf(),
            root: folder_holding(dir),
            manifest: Arc::new(manifest),
            vectors: store.clone(),
            keywords: store,
            embedder,
            fusion: Fusion::default(),
            rerank: None,
            glossary: RwLock::default(),
            glossary_read: OnceCell::new(),
            expand_queries: true,
            writable: access != Access::Read,
            snapshots: Arc::default(),
            claims,
            _lock: None,
        })
    }

    /// Reads what searches need before the first one (the glossary, from a
    /// manifest on a server); searches call it themselves. Call it before
    /// [`retriever`](Self::retriever) on a knowledge base kept on a server,
    /// or that retriever expands no query.
    pub async fn ready(&self) -> Result<()> {
        self.glossary_read
            .get_or_try_init(|| self.reload_glossary())
            .await
            .map(|_| ())
    }

    /// Claims a knowledge base kept on a server for one change (nothing to
    /// claim for one in a directory: its lock is held while it is open).
    pub(super) async fn claim(&self) -> Result<Option<Lease>> {
        match &self.claims {
            Some((manifest, holder)) => Ok(Some(Lease::take(manifest, holder).await?)),
            None => Ok(None),
        }
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

    pub(super) async fn reload_glossary(&self) -> Result<()> {
        let fresh = Arc::new(Glossary::new(self.manifest.terms().await?));
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

    /// How a file is named in the knowledge base: its path relative to the
    /// folder that holds the knowledge-base directory when it is inside it
    /// (`docs/guide.md` for `./.kb`), otherwise its absolute path.
    pub fn source_name(&self, path: &Path) -> String {
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let shown = absolute.strip_prefix(&self.root).unwrap_or(&absolute);
        shown.to_string_lossy().replace('\\', "/")
    }

    pub(super) fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "the knowledge base was opened for reading".into(),
            ))
        }
    }

    /// Every ingested file, ordered by source (`chunk_ids` holds as many
    /// empty placeholders as the file has chunks).
    pub async fn files(&self) -> Result<Vec<FileRecord>> {
        self.manifest.files().await
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
            Bm25Retriever::new(self.keywords.clone()),
            self.fusion,
        )
        .with_rerank(self.rerank.clone())
        .with_glossary(self.expand_queries.then(|| self.glossary()))
        .with_filter(filter)
        .with_adjacent_merge(true)
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
        self.ready().await?;
        self.retriever(filter.cloned()).search(query, k, mode).await
    }
}

/// Takes `dir`'s lock, waiting up to `wait` for another process to let go;
/// held until the file is dropped. Even a search writes (the vector store
/// locks its log), so a directory this user may not write is refused here.
fn lock_dir(dir: &Path, wait: Duration) -> Result<File> {
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| read_only(dir, "opening", &lock_path, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
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
}

/// Removes what a knowledge base keeps in `dir` (before a rebuild).
fn remove_local_files(dir: &Path) -> Result<()> {
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
    Ok(())
}

/// The folder that holds `dir`, absolute, whether or not `dir` exists.
fn folder_holding(dir: &Path) -> PathBuf {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf())
}

/// This process's name as a claimant of a knowledge base: unique to it.
fn claimant() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique = format!("{}/{nanos}/{:p}", std::process::id(), &nanos);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, unique.as_bytes()).to_string()
}

/// The glossary recorded in the manifest. A knowledge base built before
/// glossaries existed gets one mined from its stored chunks, kept when it is
/// opened for writing.
pub(super) fn load_glossary(
    manifest: &Manifest,
    bm25: &Bm25Index,
    writable: bool,
) -> Result<Glossary> {
    const MINED: &str = "glossary";
    if manifest.meta(MINED)?.is_some() {
        return Ok(Glossary::new(manifest.terms()?));
    }
    let chunks = bm25.chunks()?;
    let terms: Vec<(String, TermPair)> = chunks
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
