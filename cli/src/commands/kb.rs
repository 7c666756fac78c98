//! `kb ingest`, `kb search`, `kb list`, `kb delete`, `kb stats`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kb_chains::LlmReranker;
use kb_core::{ChatModel, Filter, Reranker};
use kb_retrievers::{
    Access, DirectoryLoader, Hit, IngestOptions, KnowledgeBase, Progress, Rerank, SearchMode,
};
use serde_json::json;

use crate::args::{IngestArgs, SearchArgs};
use crate::commands::ask::chat_model;
use crate::commands::embed::load_embedder;
use crate::commands::human_size;
use crate::config::{Config, RerankKind};

/// A tokio runtime for the library's async API.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    // One for the whole process: a connection to a vector server belongs
    // to the runtime that opened it.
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Opens the configured knowledge base, searching with the configured fusion.
pub fn open(config: &Config, access: Access) -> Result<KnowledgeBase> {
    let embedder = load_embedder(config)?;
    let dir = &config.kb_dir.value;
    let mut kb =
        KnowledgeBase::open_with(dir, Arc::new(embedder), access, &config.vector.backend())
            .with_context(|| format!("opening the knowledge base {}", dir.display()))?;
    kb.set_fusion(config.retrieval.value.fusion());
    kb.set_query_expansion(config.retrieval.value.expand);
    // On a server, what searches need (the glossary) is read once now, so
    // that every retriever made from the knowledge base has it.
    if access == Access::Read {
        runtime()?
            .block_on(kb.ready())
            .with_context(|| format!("opening the knowledge base {}", dir.display()))?;
    }
    Ok(kb)
}

/// The reranker a command uses: `flag` (`--rerank`) if given, else the
/// configuration's. The LLM reranker uses `model` when the command already
/// loaded one, else the configured local model; a cross-encoder is loaded
/// from its directory.
pub fn rerank(
    config: &Config,
    flag: Option<&str>,
    model: Option<Arc<dyn ChatModel>>,
) -> Result<Option<Rerank>> {
    let kind = match flag {
        Some(flag) => flag.parse()?,
        None => config.retrieval.value.rerank.clone(),
    };
    let reranker: Arc<dyn Reranker> = match kind {
        RerankKind::None => return Ok(None),
        RerankKind::Llm => {
            let model = match model {
                Some(model) => model,
                None => chat_model(config, None)?,
            };
            Arc::new(LlmReranker::new(model))
        }
        RerankKind::CrossEncoder(dir) => Arc::new(
            kb_embeddings::CrossEncoder::from_dir(&dir)
                .with_context(|| format!("loading the cross-encoder {}", dir.display()))?,
        ),
    };
    Ok(Some(Rerank {
        reranker,
        depth: config.retrieval.value.rerank_depth,
    }))
}

pub fn ingest(config: &Config, request: &IngestArgs, out: &mut impl Write) -> Result<()> {
    if request.paths.is_empty() {
        bail!("nothing to ingest: give files or folders, e.g. `kb ingest docs/`");
    }
    for path in &request.paths {
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
    }
    let mut loader = DirectoryLoader::new();
    for pattern in &request.include {
        loader = loader.include(pattern)?;
    }
    for pattern in &request.exclude {
        loader = loader.exclude(pattern)?;
    }
    let options = IngestOptions {
        loader,
        chunk_size: request.chunk_size,
        chunk_overlap: request.chunk_overlap,
        unit_size: request.unit_size,
        prune: request.prune,
        ..IngestOptions::default()
    };
    let access = if request.rebuild {
        Access::Rebuild
    } else {
        Access::Write
    };
    let kb = open(config, access)?;
    let show = !request.json && !request.quiet;
    let files_bar = ProgressBar::hidden();
    if show {
        files_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        files_bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        files_bar.set_prefix("files");
        files_bar.enable_steady_tick(Duration::from_millis(120));
    }
    let mut progress = |p: Progress| match p {
        Progress::Files { done, total } => {
            files_bar.set_length(total as u64);
            files_bar.set_position(done as u64);
        }
        Progress::Embedding { done, total } => {
            let rate = files_bar.elapsed().as_secs_f64();
            files_bar.set_message(format!("embedding {done}/{total} chunks"));
            let _ = rate;
        }
    };
    let report = runtime()?.block_on(kb.ingest(&request.paths, &options, &mut progress))?;
    files_bar.finish_and_clear();
    if request.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let rate = if report.embedding_time.as_secs_f64() > 0.0 {
        format!(
            ", {:.0} chunks/s embedding",
            report.chunks_written as f64 / report.embedding_time.as_secs_f64()
        )
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} files: {} added, {} updated, {} unchanged, {} removed, {} skipped; {} chunks written, {} removed in {:.2} s{rate}",
        report.files,
        report.added,
        report.updated,
        report.unchanged,
        report.removed,
        report.skipped.len(),
        report.chunks_written,
        report.chunks_removed,
        report.elapsed.as_secs_f64(),
    )?;
    if report.recovered > 0 {
        writeln!(
            out,
            "recovered from an interrupted run: {} stray chunks removed",
            report.recovered
        )?;
    }
    for skipped in &report.skipped {
        eprintln!("warning: skipped {}: {}", skipped.path, skipped.reason);
    }
    Ok(())
}

pub fn parse_filter(filter: Option<&str>) -> Result<Option<Filter>> {
    filter
        .map(|f| f.parse::<Filter>().context("parsing --filter"))
        .transpose()
}

pub fn search(config: &Config, request: &SearchArgs, out: &mut impl Write) -> Result<()> {
    let mode: SearchMode = request.mode.parse()?;
    if request.query.trim().is_empty() {
        bail!("the query is empty");
    }
    let filter = parse_filter(request.filter.as_deref())?;
    let mut kb = open(config, Access::Read)?;
    kb.set_rerank(rerank(config, request.rerank.as_deref(), None)?);
    let hits = runtime()?.block_on(kb.search(&request.query, request.k, filter.as_ref(), mode))?;
    if request.json {
        serde_json::to_writer_pretty(&mut *out, &hits)?;
        writeln!(out)?;
        return Ok(());
    }
    if request.explain {
        let added = kb.retriever(None).expansion(&request.query);
        if !added.is_empty() {
            writeln!(
                out,
                "the query also looks for: {} (from the glossary)",
                added.join(", ")
            )?;
        }
    }
    if hits.is_empty() {
        writeln!(out, "no results")?;
    }
    for (i, hit) in hits.iter().enumerate() {
        print_hit(out, i + 1, hit, request.explain)?;
    }
    Ok(())
}

fn print_hit(out: &mut impl Write, n: usize, hit: &Hit, explain: bool) -> Result<()> {
    let chunk = &hit.scored.chunk;
    let source = chunk
        .metadata
        .get("source")
        .and_then(|s| s.as_str())
        .unwrap_or(&chunk.doc_id);
    let headings = chunk
        .metadata
        .get("headings")
        .and_then(|s| s.as_str())
        .map(|h| format!(" › {h}"))
        .unwrap_or_default();
    writeln!(
        out,
        "[{n}] {source}{headings}  (score {:.4})",
        hit.scored.score
    )?;
    if explain {
        let describe = |r: Option<kb_retrievers::Rank>| {
            r.map(|r| {
                let added = r
                    .contribution
                    .map(|c| format!(", +{c:.4}"))
                    .unwrap_or_default();
                format!("#{} ({:.4}{added})", r.rank, r.score)
            })
            .unwrap_or_else(|| "–".into())
        };
        let reranked = hit
            .rerank
            .map(|r| format!("   rerank #{} ({:.3})", r.rank, r.score))
            .unwrap_or_default();
        writeln!(
            out,
            "    vector {}   bm25 {}{reranked}   chunk {}",
            describe(hit.vector),
            describe(hit.bm25),
            chunk.id
        )?;
        // The unit whose vector found the chunk (small-to-big).
        if let Some(unit) = chunk
            .metadata
            .get(kb_retrievers::UNIT_KEY)
            .and_then(|u| u.as_str())
        {
            writeln!(out, "    matched «{}»", one_line(unit, 120))?;
        }
    }
    writeln!(out, "    {}", one_line(&chunk.text, 240))?;
    Ok(())
}

/// `text` on one line, cut after `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

pub fn list(config: &Config, json: bool, out: &mut impl Write) -> Result<()> {
    let kb = open(config, Access::Read)?;
    let runtime = runtime()?;
    let files = runtime.block_on(kb.files())?;
    if json {
        let mut ids = runtime.block_on(kb_retrievers::chunk_ids_by_source(&kb))?;
        let rows: Vec<_> = files
            .iter()
            .map(|f| {
                json!({
                    "source": f.source,
                    "title": f.title,
                    "documents": f.documents,
                    "chunks": f.chunk_ids.len(),
                    "chunk_ids": ids.remove(&f.source).unwrap_or_default(),
                    "size": f.size,
                    "hash": f.hash,
                    "ingested_at": f.ingested_at,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if files.is_empty() {
        writeln!(out, "the knowledge base is empty")?;
    }
    for f in &files {
        writeln!(
            out,
            "{:>5} chunks  {:>9}  {}  {}",
            f.chunk_ids.len(),
            human_size(f.size),
            f.source,
            f.title
        )?;
    }
    Ok(())
}

pub fn delete(config: &Config, sources: &[String], json: bool, out: &mut impl Write) -> Result<()> {
    if sources.is_empty() {
        bail!("name the files to delete, as `kb list` shows them");
    }
    let kb = open(config, Access::Write)?;
    let runtime = runtime()?;
    let known: std::collections::HashSet<String> = runtime
        .block_on(kb.files())?
        .into_iter()
        .map(|f| f.source)
        .collect();
    let missing: Vec<&String> = sources.iter().filter(|s| !known.contains(*s)).collect();
    if !missing.is_empty() {
        bail!(
            "not in the knowledge base: {} (see `kb list`)",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (files, chunks) = runtime.block_on(kb.delete(sources))?;
    if json {
        serde_json::to_writer(&mut *out, &json!({"files": files, "chunks": chunks}))?;
        writeln!(out)?;
    } else {
        writeln!(out, "deleted {files} files ({chunks} chunks)")?;
    }
    Ok(())
}

pub fn stats(config: &Config, json: bool, out: &mut impl Write) -> Result<()> {
    let kb = open(config, Access::Read)?;
    let stats = runtime()?.block_on(kb.stats())?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &stats)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "knowledge base  {}", stats.dir.display())?;
    writeln!(
        out,
        "embedder        {} ({} dimensions)",
        stats.embedder, stats.dimension
    )?;
    writeln!(out, "files           {}", stats.files)?;
    writeln!(out, "documents       {}", stats.documents)?;
    writeln!(out, "chunks          {}", stats.chunks)?;
    writeln!(out, "vectors         {}", stats.vectors)?;
    writeln!(out, "unit vectors    {}", stats.unit_vectors)?;
    writeln!(out, "glossary terms  {}", stats.glossary_terms)?;
    writeln!(out, "bm25 entries    {}", stats.bm25_chunks)?;
    writeln!(out, "on disk         {}", human_size(stats.disk_bytes))?;
    Ok(())
}

pub fn check(config: &Config, json: bool, out: &mut impl Write) -> Result<()> {
    let kb = open(config, Access::Read)?;
    let check = runtime()?.block_on(kb.check())?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &check)?;
        writeln!(out)?;
    } else {
        writeln!(out, "files             {}", check.files)?;
        writeln!(out, "chunks            {}", check.chunks)?;
        let rows = [
            ("missing vectors", &check.missing_vectors),
            ("extra vectors", &check.extra_vectors),
            ("orphan units", &check.orphan_units),
            ("missing in bm25", &check.missing_bm25),
            ("extra in bm25", &check.extra_bm25),
            ("twice in bm25", &check.duplicate_bm25),
        ];
        for (what, ids) in rows {
            let shown: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
            let more = if ids.len() > 3 { " …" } else { "" };
            writeln!(out, "{what:<17} {} {}{more}", ids.len(), shown.join(" "))?;
        }
    }
    if check.is_consistent() {
        if !json {
            writeln!(out, "consistent")?;
        }
        return Ok(());
    }
    if check.interrupted {
        bail!(
            "the indexes disagree with the manifest: an ingest was interrupted, \
             and the next `kb ingest` repairs it"
        );
    }
    bail!("the indexes disagree with the manifest; rebuild them with `kb ingest --rebuild PATHS`")
}
