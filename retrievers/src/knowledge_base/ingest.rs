//! Ingestion: files in, chunks and their units embedded, both indexes
//! changed inside a manifest change that a crash can undo.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kb_core::{Chunk, Document, Embedder, Unit};
use sha2::{Digest, Sha256};

use super::base::ensure_space;
use super::*;
use crate::error::{Error, Result};
use crate::glossary::{self, TermPair};
use crate::loader::FileEntry;
use crate::manifest::FileRecord;
use crate::manifest::lease::Lease;
use crate::splitter::{MarkdownSplitter, RecursiveSplitter};

/// A file's new state, waiting to be committed.
pub(super) struct FileWork {
    record: FileRecord,
    chunks: Vec<Chunk>,
    /// What is embedded for each chunk when not its text: the text without
    /// the file's boilerplate lines.
    embedded: Vec<Option<String>>,
    /// The term pairs its chunks define.
    terms: Vec<TermPair>,
    old_ids: Vec<String>,
    is_new: bool,
}

impl KnowledgeBase {
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
        self.vectors.setup().await?;
        let lease = self.claim().await?;
        let result = self
            .ingest_claimed(paths, options, progress, lease.as_ref())
            .await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    /// [`ingest`](Self::ingest) once this process may change the knowledge
    /// base.
    async fn ingest_claimed(
        &self,
        paths: &[PathBuf],
        options: &IngestOptions,
        progress: &mut (dyn FnMut(Progress) + Send),
        lease: Option<&Lease>,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let mut report = IngestReport {
            recovered: self.recover(lease).await?,
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
            let existing = self.manifest.file(source).await?;
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
                self.manifest
                    .touch(source, file.size, file.mtime_ns)
                    .await?;
                report.unchanged += 1;
                continue;
            }
            let chunks = split(&loaded.documents, source, &file.relative, &splitter);
            let boilerplate = boilerplate(&loaded.documents);
            let embedded = chunks
                .iter()
                .map(|c| without_lines(&c.text, &boilerplate))
                .collect();
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
                embedded,
                old_ids: existing
                    .as_ref()
                    .map(|r| r.chunk_ids.clone())
                    .unwrap_or_default(),
                is_new: existing.is_none(),
            });
            if batch_chunks >= options.batch_chunks {
                let batch = std::mem::take(&mut batch);
                self.commit_batch(batch, options, &mut report, progress, lease)
                    .await?;
                batch_chunks = 0;
            }
        }
        self.commit_batch(batch, options, &mut report, progress, lease)
            .await?;
        progress(Progress::Files {
            done: entries.len(),
            total: entries.len(),
        });
        if options.prune && !prune_roots.is_empty() {
            let gone: Vec<String> = self
                .manifest
                .files()
                .await?
                .into_iter()
                .map(|f| f.source)
                .filter(|s| !seen.contains(s) && prune_roots.iter().any(|r| s.starts_with(r)))
                .collect();
            let (files, chunks) = self.remove_sources(&gone, lease).await?;
            report.removed += files;
            report.chunks_removed += chunks;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    pub(super) async fn commit_batch(
        &self,
        batch: Vec<FileWork>,
        options: &IngestOptions,
        report: &mut IngestReport,
        progress: &mut (dyn FnMut(Progress) + Send),
        lease: Option<&Lease>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Only chunks not already indexed need embedding: an id is a hash of
        // the chunk's content and place.
        let mut to_write: Vec<Chunk> = Vec::new();
        let mut to_embed: Vec<&str> = Vec::new();
        let mut to_remove: Vec<String> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        for work in &batch {
            let old: HashSet<&String> = work.old_ids.iter().collect();
            let new: HashSet<&String> = work.record.chunk_ids.iter().collect();
            for (chunk, text) in work.chunks.iter().zip(&work.embedded) {
                if !old.contains(&chunk.id) {
                    to_write.push(chunk.clone());
                    to_embed.push(text.as_deref().unwrap_or(&chunk.text));
                }
            }
            to_remove.extend(work.old_ids.iter().filter(|id| !new.contains(id)).cloned());
            touched.extend(work.old_ids.iter().cloned());
            touched.extend(work.record.chunk_ids.iter().cloned());
        }
        let embed_started = Instant::now();
        let units = units_of(&to_embed, options.unit_size);
        let mut texts: Vec<&str> = to_embed.clone();
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

        let sources: Vec<String> = batch.iter().map(|w| w.record.source.clone()).collect();
        ensure_space(&self.dir)?;
        let change = self.snapshots.write().await;
        still_held(lease)?;
        self.manifest.begin_change(&sources, &touched).await?;
        self.vectors.delete(&to_remove).await?;
        self.vectors.upsert(&to_write, &vectors).await?;
        self.vectors.upsert_units(&units, &unit_vectors).await?;
        let (removed, written) = (to_remove.len(), to_write.len());
        self.keywords.keyword_write(to_remove, to_write).await?;
        self.vectors.flush().await?;
        let records: Vec<FileRecord> = batch.iter().map(|w| w.record.clone()).collect();
        let terms: Vec<(String, TermPair)> = batch
            .iter()
            .flat_map(|w| w.terms.iter().map(|t| (w.record.source.clone(), t.clone())))
            .collect();
        still_held(lease)?;
        self.manifest.commit_change(&records, &terms).await?;
        self.reload_glossary().await?;
        drop(change);

        for work in &batch {
            if work.is_new {
                report.added += 1;
            } else {
                report.updated += 1;
            }
        }
        report.chunks_written += written;
        report.chunks_removed += removed;
        Ok(())
    }

    /// Removes files (by source name, as [`files`](Self::files) lists them)
    /// and their chunks. Returns (files, chunks) removed.
    pub async fn delete(&self, sources: &[String]) -> Result<(usize, usize)> {
        self.require_writable()?;
        self.vectors.setup().await?;
        let lease = self.claim().await?;
        let result = async {
            self.recover(lease.as_ref()).await?;
            self.remove_sources(sources, lease.as_ref()).await
        }
        .await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        result
    }

    pub(super) async fn remove_sources(
        &self,
        sources: &[String],
        lease: Option<&Lease>,
    ) -> Result<(usize, usize)> {
        let mut ids = Vec::new();
        let mut found = Vec::new();
        for source in sources {
            if let Some(record) = self.manifest.file(source).await? {
                ids.extend(record.chunk_ids);
                found.push(source.clone());
            }
        }
        if found.is_empty() {
            return Ok((0, 0));
        }
        ensure_space(&self.dir)?;
        let _change = self.snapshots.write().await;
        still_held(lease)?;
        self.manifest.begin_change(&found, &ids).await?;
        self.remove_chunks(&ids).await?;
        still_held(lease)?;
        self.manifest.commit_change(&[], &[]).await?;
        self.reload_glossary().await?;
        Ok((found.len(), ids.len()))
    }

    /// Removes from both indexes what an interrupted change left behind.
    ///
    /// Locks are taken in one order everywhere: the snapshot lock, then the
    /// manifest.
    pub(super) async fn recover(&self, lease: Option<&Lease>) -> Result<usize> {
        if !self.manifest.has_pending().await? {
            return Ok(0);
        }
        let orphans = self.manifest.orphans().await?;
        ensure_space(&self.dir)?;
        let _change = self.snapshots.write().await;
        self.remove_chunks(&orphans).await?;
        still_held(lease)?;
        self.manifest.clear_pending().await?;
        tracing::info!(
            orphans = orphans.len(),
            "recovered from an interrupted ingestion"
        );
        Ok(orphans.len())
    }

    /// Removes chunks from both indexes, durably (inside a change).
    pub(super) async fn remove_chunks(&self, ids: &[String]) -> Result<()> {
        self.vectors.delete(ids).await?;
        self.keywords
            .keyword_write(ids.to_vec(), Vec::new())
            .await?;
        Ok(self.vectors.flush().await?)
    }
}

/// An error if this process's claim on a server-kept knowledge base could
/// not be renewed (another writer may hold it now).
fn still_held(lease: Option<&Lease>) -> Result<()> {
    lease.map_or(Ok(()), Lease::check)
}

/// The units of each chunk as (chunk index, unit number, text to embed):
/// pieces of at most `unit_size` characters cut at sentence boundaries. A
/// chunk that makes only one unit has none: its own vector serves. (Units
/// are embedded without the chunk's heading path: on the sample corpus the
/// path made them worse, since `#` comments in code read as headings.)
pub(super) fn units_of(chunks: &[&str], unit_size: usize) -> Vec<(usize, usize, String)> {
    if unit_size == 0 {
        return Vec::new();
    }
    let splitter = RecursiveSplitter::new(unit_size, 0);
    let mut units = Vec::new();
    for (i, text) in chunks.iter().enumerate() {
        let pieces = splitter.split(text);
        if pieces.len() < 2 {
            continue;
        }
        for (n, piece) in pieces.into_iter().enumerate() {
            units.push((i, n, piece.text));
        }
    }
    units
}

/// A line that comes back this often in one file is boilerplate.
const BOILERPLATE_REPEATS: usize = 3;

/// The lines of a file's documents that are boilerplate: the same line
/// (trimmed) at least [`BOILERPLATE_REPEATS`] times, like a placeholder left
/// by an image (`在这里插入图片描述`), a `参考` marker, a repeated import.
pub(super) fn boilerplate(documents: &[Document]) -> BTreeSet<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for document in documents {
        for line in document
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            *counts.entry(line).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= BOILERPLATE_REPEATS)
        .map(|(line, _)| line.to_string())
        .collect()
}

/// `text` without its `boilerplate` lines, if it has any and anything else
/// is left.
pub(super) fn without_lines(text: &str, boilerplate: &BTreeSet<String>) -> Option<String> {
    if !text.lines().any(|l| boilerplate.contains(l.trim())) {
        return None;
    }
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !boilerplate.contains(l.trim()))
        .collect();
    (!kept.iter().all(|l| l.trim().is_empty())).then(|| kept.join("\n"))
}

/// SHA-256 over a file's documents, as they were read.
pub(super) fn content_hash(documents: &[Document]) -> String {
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
pub(super) fn split(
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

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod boilerplate_tests {
    use super::*;

    #[test]
    fn lines_repeated_in_a_file_are_not_embedded() {
        let text = "Flash Attention\n在这里插入图片描述\n优点:\n  在这里插入图片描述\n\n节省显存\n在这里插入图片描述\n";
        let documents = [Document::new("a.md", text)];
        let lines = boilerplate(&documents);
        assert_eq!(lines.iter().collect::<Vec<_>>(), ["在这里插入图片描述"]);
        assert_eq!(
            without_lines(text, &lines).as_deref(),
            Some("Flash Attention\n优点:\n\n节省显存")
        );
        // Text without boilerplate is embedded as it is; so is text of
        // nothing else.
        assert_eq!(without_lines("a\n\nb\n", &lines), None);
        assert_eq!(without_lines("在这里插入图片描述\n", &lines), None);
    }
}
