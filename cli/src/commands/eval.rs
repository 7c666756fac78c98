//! `kb eval retrieval`: Recall@1/5/10 and MRR of the knowledge base on a
//! dataset of questions with verbatim evidence strings.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use kb_retrievers::{Access, SearchMode};
use serde::{Deserialize, Serialize};

use crate::commands::kb::{open, runtime};
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
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn retrieval(
    config: &Config,
    dataset: &Path,
    modes: &[SearchMode],
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let file = std::fs::File::open(dataset)
        .with_context(|| format!("opening the dataset {}", dataset.display()))?;
    let mut items = Vec::new();
    let mut skipped = 0;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", dataset.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a dataset item", dataset.display(), n + 1))?;
        if item.evidence.iter().all(|e| e.trim().is_empty()) {
            skipped += 1;
            continue;
        }
        items.push(item);
    }
    if items.is_empty() {
        bail!("{} has no question with evidence", dataset.display());
    }
    let kb = open(config, Access::Read)?;
    let rt = runtime()?;
    let mut reports = Vec::new();
    for &mode in modes {
        let mut overall = Metrics::default();
        let mut by_kind: BTreeMap<String, Metrics> = BTreeMap::new();
        let mut misses = Vec::new();
        for item in &items {
            let hits = rt.block_on(kb.search(&item.question, 10, None, mode))?;
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
            overall.add(rank);
            by_kind
                .entry(item.kind.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .add(rank);
        }
        reports.push(ModeReport {
            mode,
            overall: overall.finish(),
            by_kind: by_kind.into_iter().map(|(k, m)| (k, m.finish())).collect(),
            misses,
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
                "modes": reports,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} questions ({} without evidence skipped), embedder {}",
        items.len(),
        skipped,
        kb.embedder().id()
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
    }
    Ok(())
}
