//! `kb eval retrieval`: Recall@1/5/10 and MRR of the knowledge base on a
//! dataset of questions with verbatim evidence strings.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kb_retrievers::{Access, SearchMode};
use serde::{Deserialize, Serialize};

use crate::commands::kb::{open, rerank, runtime};
use crate::config::Config;

/// One question of the dataset (other fields are ignored).
#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    id: String,
    question: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    evidence: Vec<String>,
    #[serde(default)]
    answer_keywords: Vec<String>,
}

/// Reads a JSON Lines dataset.
fn read_items(dataset: &Path) -> Result<Vec<Item>> {
    let file = std::fs::File::open(dataset)
        .with_context(|| format!("opening the dataset {}", dataset.display()))?;
    let mut items = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", dataset.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a dataset item", dataset.display(), n + 1))?;
        items.push(item);
    }
    Ok(items)
}

/// Metrics of one mode over some questions.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Metrics {
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr: f64,
}

impl Metrics {
    fn add(&mut self, rank: Option<usize>) {
        self.questions += 1;
        if let Some(r) = rank {
            self.recall_at_1 += f64::from(r <= 1);
            self.recall_at_5 += f64::from(r <= 5);
            self.recall_at_10 += f64::from(r <= 10);
            self.mrr += 1.0 / r as f64;
        }
    }

    fn finish(mut self) -> Self {
        let n = self.questions.max(1) as f64;
        self.recall_at_1 /= n;
        self.recall_at_5 /= n;
        self.recall_at_10 /= n;
        self.mrr /= n;
        self
    }
}

#[derive(Debug, Serialize)]
struct ModeReport {
    mode: SearchMode,
    overall: Metrics,
    by_kind: BTreeMap<String, Metrics>,
    misses: Vec<String>,
    /// Each question's first rank holding its evidence (none: not in the top 10).
    ranks: Vec<ItemRank>,
    /// Median time of one search (query embedding, both indexes, fusion,
    /// reranking), in milliseconds.
    latency_ms_p50: f64,
    /// The slowest search, in milliseconds.
    latency_ms_max: f64,
}

/// Where one question's evidence was first found.
#[derive(Debug, Serialize)]
struct ItemRank {
    id: String,
    kind: Option<String>,
    rank: Option<usize>,
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn retrieval(
    config: &Config,
    dataset: &Path,
    modes: &[SearchMode],
    rerank_flag: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let mut items = read_items(dataset)?;
    let before = items.len();
    items.retain(|item| item.evidence.iter().any(|e| !e.trim().is_empty()));
    let skipped = before - items.len();
    if items.is_empty() {
        bail!("{} has no question with evidence", dataset.display());
    }
    let mut kb = open(config, Access::Read)?;
    let reranker = rerank(config, rerank_flag, None)?;
    let reranker_name = reranker.as_ref().map(|r| r.reranker.name().to_string());
    kb.set_rerank(reranker);
    let rt = runtime()?;
    // One search first, so that model loading and cold caches are not timed.
    rt.block_on(kb.search(&items[0].question, 10, None, SearchMode::Hybrid))?;
    let mut reports = Vec::new();
    for &mode in modes {
        let mut overall = Metrics::default();
        let mut by_kind: BTreeMap<String, Metrics> = BTreeMap::new();
        let mut misses = Vec::new();
        let mut ranks = Vec::with_capacity(items.len());
        let mut latencies = Vec::with_capacity(items.len());
        for item in &items {
            let started = Instant::now();
            let hits = rt.block_on(kb.search(&item.question, 10, None, mode))?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            let evidence: Vec<String> = item
                .evidence
                .iter()
                .map(|e| normalize(e))
                .filter(|e| !e.is_empty())
                .collect();
            let rank = hits
                .iter()
                .position(|h| {
                    let text = normalize(&h.scored.chunk.text);
                    evidence.iter().any(|e| text.contains(e.as_str()))
                })
                .map(|i| i + 1);
            if rank.is_none() {
                misses.push(if item.id.is_empty() {
                    item.question.clone()
                } else {
                    item.id.clone()
                });
            }
            ranks.push(ItemRank {
                id: item.id.clone(),
                kind: item.kind.clone(),
                rank,
            });
            overall.add(rank);
            by_kind
                .entry(item.kind.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .add(rank);
        }
        latencies.sort_by(f64::total_cmp);
        reports.push(ModeReport {
            mode,
            overall: overall.finish(),
            by_kind: by_kind.into_iter().map(|(k, m)| (k, m.finish())).collect(),
            misses,
            ranks,
            latency_ms_p50: latencies[latencies.len() / 2],
            latency_ms_max: latencies.last().copied().unwrap_or(0.0),
        });
    }
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "dataset": dataset,
                "questions": items.len(),
                "skipped_without_evidence": skipped,
                "embedder": kb.embedder().id(),
                "reranker": reranker_name,
                "modes": reports,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} questions ({} without evidence skipped), embedder {}, reranker {}",
        items.len(),
        skipped,
        kb.embedder().id(),
        reranker_name.as_deref().unwrap_or("none")
    )?;
    writeln!(
        out,
        "{:<8} {:<14} {:>4} {:>6} {:>6} {:>6} {:>6}",
        "mode", "kind", "n", "R@1", "R@5", "R@10", "MRR"
    )?;
    for report in &reports {
        let mode = format!("{:?}", report.mode).to_lowercase();
        let row = |out: &mut dyn Write, kind: &str, m: &Metrics| {
            writeln!(
                out,
                "{:<8} {:<14} {:>4} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                mode, kind, m.questions, m.recall_at_1, m.recall_at_5, m.recall_at_10, m.mrr
            )
        };
        row(out, "all", &report.overall)?;
        for (kind, m) in &report.by_kind {
            row(out, kind, m)?;
        }
        if !report.misses.is_empty() {
            writeln!(out, "{:<8} misses: {}", mode, report.misses.join(", "))?;
        }
        writeln!(
            out,
            "{:<8} latency per search: p50 {:.1} ms, max {:.1} ms",
            mode, report.latency_ms_p50, report.latency_ms_max
        )?;
    }
    Ok(())
}

/// One answered question of `kb eval answers`.
#[derive(Debug, Serialize)]
struct AnswerRow {
    id: String,
    kind: String,
    answerable: bool,
    /// Share of the answer keywords found in the answer (answerable items).
    keyword_hit: Option<f64>,
    abstained: bool,
    cited: Vec<usize>,
    attributed: Vec<usize>,
    invalid_citations: Vec<usize>,
    /// Whether a cited source holds one of the evidence strings.
    cited_evidence: Option<bool>,
    first_token_ms: Option<f64>,
    tokens_per_second: Option<f64>,
    answer: String,
}

/// Averages over the rows of `kb eval answers`.
#[derive(Debug, Serialize)]
struct AnswerSummary {
    questions: usize,
    answerable: usize,
    keyword_hit_rate: f64,
    /// Unanswerable items the model declined to answer.
    abstention_rate: Option<f64>,
    /// Answerable items the model wrongly declined.
    false_abstention_rate: f64,
    /// Answers whose citations all point at provided sources (after
    /// removing invalid markers, this is the share that needed none removed).
    citations_valid_rate: f64,
    /// Answers citing at least one source.
    citing_rate: f64,
    /// Answerable items whose cited sources hold the evidence.
    cited_evidence_rate: f64,
    mean_first_token_ms: f64,
    median_first_token_ms: f64,
    mean_tokens_per_second: f64,
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn answers(
    config: &Config,
    dataset: &Path,
    rag: &crate::args::RagArgs,
    limit: Option<usize>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let mut items = read_items(dataset)?;
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        bail!("{} has no questions", dataset.display());
    }
    let kb = open(config, Access::Read)?;
    let model = crate::commands::ask::chat_model(config, rag.decoding.threads)?;
    let chain = crate::commands::ask::rag_chain(config, &kb, model.clone(), rag)?;
    let rt = runtime()?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(items.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} questions ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::with_capacity(items.len());
    for item in &items {
        let answer = rt.block_on(chain.ask(&item.question))?;
        bar.inc(1);
        let answerable = item.evidence.iter().any(|e| !e.trim().is_empty());
        let text = answer.text.to_lowercase();
        let keyword_hit = (answerable && !item.answer_keywords.is_empty()).then(|| {
            let found = item
                .answer_keywords
                .iter()
                .filter(|k| text.contains(&k.to_lowercase()))
                .count();
            found as f64 / item.answer_keywords.len() as f64
        });
        let cited_evidence = answerable.then(|| {
            answer.cited_sources().any(|s| {
                let source = normalize(&s.text);
                item.evidence
                    .iter()
                    .any(|e| !e.trim().is_empty() && source.contains(&normalize(e)))
            })
        });
        let generation = answer.timings.generation.as_secs_f64();
        rows.push(AnswerRow {
            id: item.id.clone(),
            kind: item.kind.clone().unwrap_or_else(|| "-".into()),
            answerable,
            keyword_hit,
            abstained: answer.abstained,
            cited: answer.cited.clone(),
            attributed: answer.attributed.clone(),
            invalid_citations: answer.invalid_citations.clone(),
            cited_evidence,
            first_token_ms: answer.timings.first_token.map(|d| d.as_secs_f64() * 1e3),
            tokens_per_second: (generation > 0.0)
                .then(|| answer.usage.completion_tokens as f64 / generation),
            answer: answer.text.clone(),
        });
    }
    bar.finish_and_clear();
    let answerable: Vec<&AnswerRow> = rows.iter().filter(|r| r.answerable).collect();
    let unanswerable: Vec<&AnswerRow> = rows.iter().filter(|r| !r.answerable).collect();
    let rate = |rows: &[&AnswerRow], f: &dyn Fn(&AnswerRow) -> bool| {
        if rows.is_empty() {
            0.0
        } else {
            rows.iter().filter(|r| f(r)).count() as f64 / rows.len() as f64
        }
    };
    let all: Vec<&AnswerRow> = rows.iter().collect();
    let first_tokens: Vec<f64> = rows.iter().filter_map(|r| r.first_token_ms).collect();
    let speeds: Vec<f64> = rows.iter().filter_map(|r| r.tokens_per_second).collect();
    let hits: Vec<f64> = rows.iter().filter_map(|r| r.keyword_hit).collect();
    let summary = AnswerSummary {
        questions: rows.len(),
        answerable: answerable.len(),
        keyword_hit_rate: mean(&hits),
        abstention_rate: (!unanswerable.is_empty()).then(|| rate(&unanswerable, &|r| r.abstained)),
        false_abstention_rate: rate(&answerable, &|r| r.abstained),
        citations_valid_rate: rate(&all, &|r| r.invalid_citations.is_empty()),
        citing_rate: rate(&all, &|r| !r.cited.is_empty()),
        cited_evidence_rate: rate(&answerable, &|r| r.cited_evidence == Some(true)),
        mean_first_token_ms: mean(&first_tokens),
        median_first_token_ms: median(&first_tokens),
        mean_tokens_per_second: mean(&speeds),
    };
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "dataset": dataset,
                "model": model.name(),
                "embedder": kb.embedder().id(),
                "k": rag.k,
                "strategy": rag.strategy,
                "summary": summary,
                "items": rows,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<6} {:<14} {:>8} {:>6} {:>9} {:>9} {:>9}",
        "id", "kind", "keywords", "abst.", "cited", "evidence", "ttft ms"
    )?;
    for r in &rows {
        let cited: Vec<String> = r.cited.iter().map(|n| n.to_string()).collect();
        writeln!(
            out,
            "{:<6} {:<14} {:>8} {:>6} {:>9} {:>9} {:>9}",
            r.id,
            r.kind,
            r.keyword_hit.map_or("-".into(), |h| format!("{h:.2}")),
            if r.abstained { "yes" } else { "no" },
            if cited.is_empty() {
                "-".into()
            } else {
                cited.join(",")
            },
            r.cited_evidence
                .map_or("-", |c| if c { "yes" } else { "no" }),
            r.first_token_ms.map_or("-".into(), |t| format!("{t:.0}")),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} questions ({} answerable), model {}, embedder {}",
        summary.questions,
        summary.answerable,
        model.name(),
        kb.embedder().id()
    )?;
    writeln!(
        out,
        "keyword hit rate        {:.3}",
        summary.keyword_hit_rate
    )?;
    match summary.abstention_rate {
        Some(r) => writeln!(out, "abstention (no answer)  {r:.3}")?,
        None => writeln!(out, "abstention (no answer)  - (no unanswerable items)")?,
    }
    writeln!(
        out,
        "false abstention        {:.3}",
        summary.false_abstention_rate
    )?;
    writeln!(
        out,
        "citations valid         {:.3}",
        summary.citations_valid_rate
    )?;
    writeln!(out, "answers citing          {:.3}", summary.citing_rate)?;
    writeln!(
        out,
        "cited evidence          {:.3}",
        summary.cited_evidence_rate
    )?;
    writeln!(
        out,
        "first token             {:.0} ms mean, {:.0} ms median",
        summary.mean_first_token_ms, summary.median_first_token_ms
    )?;
    writeln!(
        out,
        "generation              {:.1} tok/s",
        summary.mean_tokens_per_second
    )?;
    Ok(())
}
