//! Loaders: files and folders into [`Document`]s, chosen by extension.

mod decode;
mod docx;
mod pdf;

use std::path::Path;
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use kb_core::{Document, Metadata};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use decode::{NotText, decode};

/// How a CSV file becomes documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvMode {
    /// One document per row, written `column: value`, one a line (the default).
    #[default]
    Rows,
    /// The whole table as one document.
    Table,
}

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The file (or `file:line` for one bad record).
    pub path: String,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// What a load produced: documents, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The loaded documents.
    pub documents: Vec<Document>,
    /// Files and records that were skipped, each with its reason.
    pub skipped: Vec<Skipped>,
}

/// A file found by [`DirectoryLoader::files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// Its path relative to the folder that was walked (its name for a file).
    pub relative: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch (0 if unknown).
    pub mtime_ns: u64,
}

impl FileEntry {
    fn new(path: std::path::PathBuf, relative: String, meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        FileEntry {
            path,
            relative,
            size: meta.len(),
            mtime_ns,
        }
    }
}

/// Loads files and folders of Markdown, text, HTML, JSON, JSON Lines, CSV, PDF (text layer) and DOCX.
///
/// Folders are walked recursively, skipping hidden entries and VCS folders,
/// following include/exclude globs (matched against the path relative to the
/// folder). A file that is binary, undecodable, too large or malformed is
/// skipped with its reason; the others still load. Text is decoded from
/// UTF-8 (with or without a byte-order mark), UTF-16, or a detected legacy
/// encoding such as GBK.
///
/// Every document's id is its path relative to the loaded folder (`#N` added
/// for the N-th record of a JSON, JSON Lines or CSV file), and its metadata
/// holds `source`, `title`, `format`, `encoding`, `mtime` and `content_hash`.
///
/// ```no_run
/// use kb_retrievers::DirectoryLoader;
/// let report = DirectoryLoader::new().include("**/*.md")?.load("docs")?;
/// for skipped in &report.skipped {
///     eprintln!("skipped {}: {}", skipped.path, skipped.reason);
/// }
/// println!("{} documents", report.documents.len());
/// # Ok::<(), kb_retrievers::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DirectoryLoader {
    include: Option<GlobSet>,
    include_patterns: Vec<Glob>,
    exclude: Option<GlobSet>,
    exclude_patterns: Vec<Glob>,
    max_file_size: u64,
    json_text_field: String,
    csv_mode: CsvMode,
}

impl Default for DirectoryLoader {
    fn default() -> Self {
        Self::new()
    }
}

/// Extensions the loader reads.
const EXTENSIONS: [&str; 10] = [
    "md", "markdown", "txt", "html", "htm", "json", "jsonl", "csv", "pdf", "docx",
];

impl DirectoryLoader {
    /// A loader with no globs, a 50 MB file limit, JSON text field `text`,
    /// and one document per CSV row.
    pub fn new() -> Self {
        DirectoryLoader {
            include: None,
            include_patterns: Vec::new(),
            exclude: None,
            exclude_patterns: Vec::new(),
            max_file_size: 50 * 1024 * 1024,
            json_text_field: "text".into(),
            csv_mode: CsvMode::Rows,
        }
    }

    /// Loads only files matching `pattern` (may be given several times).
    pub fn include(mut self, pattern: &str) -> Result<Self> {
        self.include_patterns.push(glob(pattern)?);
        self.include = Some(build(&self.include_patterns)?);
        Ok(self)
    }

    /// Skips files matching `pattern` (may be given several times).
    pub fn exclude(mut self, pattern: &str) -> Result<Self> {
        self.exclude_patterns.push(glob(pattern)?);
        self.exclude = Some(build(&self.exclude_patterns)?);
        Ok(self)
    }

    /// Files larger than this are skipped; default 50 MB.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The field of JSON and JSON Lines records that holds the text; default `text`.
    pub fn json_text_field(mut self, field: impl Into<String>) -> Self {
        self.json_text_field = field.into();
        self
    }

    /// How CSV files become documents; default [`CsvMode::Rows`].
    pub fn csv_mode(mut self, mode: CsvMode) -> Self {
        self.csv_mode = mode;
        self
    }

    /// Whether the loader reads files with this name (by its extension).
    pub fn reads(name: &str) -> bool {
        extension(Path::new(name)).is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
    }

    /// The extensions the loader reads.
    pub fn extensions() -> &'static [&'static str] {
        &EXTENSIONS
    }

    /// Loads a file, or every readable file under a folder. Ids and
    /// `source` metadata are paths relative to `path` (a file's own name
    /// when `path` is a file).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<LoadReport> {
        let (files, skipped) = self.files(path)?;
        let mut report = LoadReport {
            documents: Vec::new(),
            skipped,
        };
        for file in &files {
            self.load_file(&file.path, &file.relative, &mut report);
        }
        Ok(report)
    }

    /// The files [`load`](Self::load) would read under `path`, with their
    /// size and modification time, without reading them: what incremental
    /// ingestion compares against its manifest.
    pub fn files(&self, path: impl AsRef<Path>) -> Result<(Vec<FileEntry>, Vec<Skipped>)> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            action: "reading",
            path: path.into(),
            source,
        })?;
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut seen: std::collections::HashMap<std::path::PathBuf, String> =
            std::collections::HashMap::new();
        if meta.is_file() {
            let relative = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push(FileEntry::new(path.to_path_buf(), relative, &meta));
            return Ok((files, skipped));
        }
        // Links are followed (a linked folder is read like any other); a
        // link back up the tree is reported as a loop and skipped.
        let walker = walkdir::WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    let where_ = err
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    skipped.push(Skipped {
                        path: where_,
                        reason: err.to_string(),
                    });
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry.path().strip_prefix(path).unwrap_or(entry.path());
            let id = relative.to_string_lossy().replace('\\', "/");
            if self.include.as_ref().is_some_and(|g| !g.is_match(relative))
                || self.exclude.as_ref().is_some_and(|g| g.is_match(relative))
            {
                continue;
            }
            if extension(entry.path()).is_none_or(|ext| !EXTENSIONS.contains(&ext.as_str())) {
                if self.include.is_some() {
                    skipped.push(Skipped {
                        path: id,
                        reason: format!(
                            "unsupported file type (kb reads {})",
                            EXTENSIONS.join(", ")
                        ),
                    });
                }
                continue;
            }
            // Through links, one file can be reached under two names: the
            // first in name order is read.
            if let Ok(real) = entry.path().canonicalize() {
                if let Some(first) = seen.get(&real) {
                    skipped.push(Skipped {
                        path: id,
                        reason: format!("the same file as {first} (through a link)"),
                    });
                    continue;
                }
                seen.insert(real, id.clone());
            }
            match entry.metadata() {
                Ok(meta) => files.push(FileEntry::new(entry.path().to_path_buf(), id, &meta)),
                Err(err) => skipped.push(Skipped {
                    path: id,
                    reason: format!("cannot read: {err}"),
                }),
            }
        }
        Ok((files, skipped))
    }

    /// Reads one file found by [`files`](Self::files); ids are its relative path.
    pub fn load_entry(&self, file: &FileEntry) -> LoadReport {
        let mut report = LoadReport::default();
        self.load_file(&file.path, &file.relative, &mut report);
        report
    }

    fn load_file(&self, path: &Path, id: &str, report: &mut LoadReport) {
        let skip = |report: &mut LoadReport, reason: String| {
            report.skipped.push(Skipped {
                path: id.to_string(),
                reason,
            });
        };
        let Some(ext) = extension(path).filter(|e| EXTENSIONS.contains(&e.as_str())) else {
            skip(
                report,
                format!("unsupported file type (kb reads {})", EXTENSIONS.join(", ")),
            );
            return;
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => return skip(report, format!("cannot read: {err}")),
        };
        if meta.len() > self.max_file_size {
            return skip(
                report,
                format!(
                    "{} bytes is over the {}-byte limit",
                    meta.len(),
                    self.max_file_size
                ),
            );
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => return skip(report, format!("cannot read: {err}")),
        };
        let mut base = Metadata::new();
        base.insert("source".into(), id.into());
        base.insert("format".into(), ext.clone().into());
        if let Some(mtime) = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            base.insert("mtime".into(), mtime.as_secs().into());
        }
        // Binary formats carry their own text.
        let binary = match ext.as_str() {
            "pdf" => Some(pdf::text(&bytes)),
            "docx" => Some(docx::text(&bytes)),
            _ => None,
        };
        if let Some(extracted) = binary {
            match extracted {
                Ok(text) => {
                    let title = markdown_title(&text).unwrap_or_else(|| stem(path));
                    report
                        .documents
                        .push(document(id.to_string(), text, base, &title));
                }
                Err(reason) => skip(report, reason),
            }
            return;
        }
        let (text, decoded) = match decode(&bytes) {
            Ok(ok) => ok,
            Err(NotText::Binary) => return skip(report, "binary file".into()),
            Err(NotText::Undecodable(enc)) => {
                return skip(report, format!("not valid text (best guess: {enc})"));
            }
        };
        base.insert("encoding".into(), decoded.encoding.into());
        match ext.as_str() {
            "md" | "markdown" | "txt" => {
                let title = markdown_title(&text).unwrap_or_else(|| stem(path));
                report
                    .documents
                    .push(document(id.to_string(), text, base, &title));
            }
            "html" | "htm" => {
                // Headings come out as `# …` lines, so the Markdown splitter
                // finds the document's structure; links stay inline.
                let rendered = html2text::config::plain_no_decorate()
                    .link_footnotes(false)
                    .string_from_read(text.as_bytes(), 100_000);
                match rendered {
                    Ok(body) => {
                        let title = html_title(&text)
                            .or_else(|| markdown_title(&body))
                            .unwrap_or_else(|| stem(path));
                        let body = body.trim().to_string();
                        report
                            .documents
                            .push(document(id.to_string(), body, base, &title));
                    }
                    Err(err) => skip(report, format!("cannot read the HTML: {err}")),
                }
            }
            "json" => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(items)) => {
                    for (n, item) in items.into_iter().enumerate() {
                        self.record(id, n + 1, item, &base, path, report);
                    }
                }
                Ok(item) => self.record(id, 1, item, &base, path, report),
                Err(err) => skip(report, format!("not valid JSON: {err}")),
            },
            "jsonl" => {
                for (n, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    match serde_json::from_str::<Value>(line) {
                        Ok(item) => self.record(id, n + 1, item, &base, path, report),
                        Err(err) => report.skipped.push(Skipped {
                            path: format!("{id}:{}", n + 1),
                            reason: format!("not valid JSON: {err}"),
                        }),
                    }
                }
            }
            "csv" => self.csv(id, &text, &base, path, report),
            _ => skip(report, "unsupported file type".into()),
        }
    }

    /// One JSON record: its text field is the text, the other fields metadata.
    fn record(
        &self,
        id: &str,
        n: usize,
        item: Value,
        base: &Metadata,
        path: &Path,
        report: &mut LoadReport,
    ) {
        let record_id = format!("{id}#{n}");
        let Value::Object(mut fields) = item else {
            report.skipped.push(Skipped {
                path: record_id,
                reason: "record is not a JSON object".into(),
            });
            return;
        };
        let Some(text) = fields
            .remove(&self.json_text_field)
            .and_then(|v| v.as_str().map(String::from))
        else {
            report.skipped.push(Skipped {
                path: record_id,
                reason: format!(
                    "no string field {:?} (set the JSON text field)",
                    self.json_text_field
                ),
            });
            return;
        };
        let mut metadata = base.clone();
        for (key, value) in fields {
            metadata.entry(key).or_insert(value);
        }
        let title = format!("{} #{n}", stem(path));
        report
            .documents
            .push(document(record_id, text, metadata, &title));
    }

    fn csv(&self, id: &str, text: &str, base: &Metadata, path: &Path, report: &mut LoadReport) {
        if self.csv_mode == CsvMode::Table {
            report.documents.push(document(
                id.to_string(),
                text.to_string(),
                base.clone(),
                &stem(path),
            ));
            return;
        }
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(err) => {
                report.skipped.push(Skipped {
                    path: id.into(),
                    reason: format!("not valid CSV: {err}"),
                });
                return;
            }
        };
        for (n, row) in reader.records().enumerate() {
            let record_id = format!("{id}#{}", n + 1);
            match row {
                Ok(row) => {
                    let body: Vec<String> = headers
                        .iter()
                        .zip(row.iter())
                        .filter(|(_, v)| !v.trim().is_empty())
                        .map(|(h, v)| format!("{h}: {v}"))
                        .collect();
                    if body.is_empty() {
                        continue;
                    }
                    let title = format!("{} #{}", stem(path), n + 1);
                    report.documents.push(document(
                        record_id,
                        body.join("\n"),
                        base.clone(),
                        &title,
                    ));
                }
                Err(err) => report.skipped.push(Skipped {
                    path: record_id,
                    reason: format!("bad CSV row: {err}"),
                }),
            }
        }
    }
}

fn document(id: String, text: String, mut metadata: Metadata, title: &str) -> Document {
    let hash: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    metadata.insert("title".into(), title.into());
    metadata.insert("content_hash".into(), hash.into());
    Document { id, text, metadata }
}

fn glob(pattern: &str) -> Result<Glob> {
    Glob::new(pattern).map_err(|e| Error::InvalidInput(format!("bad glob {pattern:?}: {e}")))
}

fn build(globs: &[Glob]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(g.clone());
    }
    builder
        .build()
        .map_err(|e| Error::InvalidInput(format!("bad globs: {e}")))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || matches!(name.as_ref(), "node_modules" | "target" | "__pycache__")
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The text of the `<title>` element, if any.
fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = html[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!title.is_empty()).then_some(title)
}

/// The text of the first `# ` heading, if the text starts with Markdown.
fn markdown_title(text: &str) -> Option<String> {
    text.lines()
        .take(20)
        .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty())
}
