//! `kb embed`.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use kb_embeddings::LocalEmbedder;
use serde::Serialize;

use crate::config::Config;

/// Loads the configured embedder.
pub fn load_embedder(config: &Config) -> Result<LocalEmbedder> {
    let path = config.model_cache().resolve(&config.embedder.value)?;
    LocalEmbedder::open(&path)
        .with_context(|| format!("loading the embedder from {}", path.display()))
}

pub fn run(
    config: &Config,
    mut texts: Vec<String>,
    query: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    if texts.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading texts from standard input")?;
            if !line.trim().is_empty() {
                texts.push(line);
            }
        }
        if texts.is_empty() {
            bail!("no text to embed: give texts as arguments or one per line on standard input");
        }
    }
    let embedder = load_embedder(config)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = if query {
        refs.iter()
            .map(|text| embedder.embed_query_blocking(text))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        embedder.embed_documents_blocking(&refs)?
    };
    if json {
        #[derive(Serialize)]
        struct Item<'a> {
            text: &'a str,
            embedding: &'a [f32],
        }
        let items: Vec<Item> = texts
            .iter()
            .zip(&vectors)
            .map(|(text, vector)| Item {
                text,
                embedding: vector,
            })
            .collect();
        serde_json::to_writer(&mut *out, &items)?;
        writeln!(out)?;
        return Ok(());
    }
    for (text, vector) in texts.iter().zip(&vectors) {
        let head: Vec<String> = vector.iter().take(4).map(|v| format!("{v:.4}")).collect();
        let tail = vector.last().map(|v| format!("{v:.4}")).unwrap_or_default();
        writeln!(
            out,
            "{} dims [{}, …, {tail}]  {text}",
            vector.len(),
            head.join(", ")
        )?;
    }
    Ok(())
}
