//! What the examples share: their command line, the chat model it names and
//! the default embedder.

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kb::ChatModel;
use kb::models::{DEFAULT_LLM, MULTILINGUAL_EMBEDDER, ModelCache};

/// An example's command line: `--model M`, other `--flag value` pairs and
/// positional words.
pub(crate) struct Args {
    /// `--model`: a server URL (`http://host:port/v1#model`), a GGUF path or
    /// a catalog name; the fetched SmolLM2 by default.
    pub(crate) model: String,
    flags: Vec<(String, String)>,
    /// Words that are not flags.
    pub(crate) words: Vec<String>,
}

impl Args {
    /// Reads the process's arguments; `switches` are flags without a value.
    pub(crate) fn parse(usage: &str, switches: &[&str]) -> Result<Self> {
        let mut args = Args {
            model: DEFAULT_LLM.to_string(),
            flags: Vec::new(),
            words: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(name) = arg.strip_prefix("--") else {
                args.words.push(arg);
                continue;
            };
            if switches.contains(&name) {
                args.flags.push((name.to_string(), String::new()));
                continue;
            }
            let Some(value) = it.next() else {
                bail!("--{name} needs a value\n\n{usage}");
            };
            if name == "model" {
                args.model = value;
            } else {
                args.flags.push((name.to_string(), value));
            }
        }
        Ok(args)
    }

    /// The value of `--name`, parsed, or `default`.
    pub(crate) fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.flags.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
            None => Ok(default),
        }
    }

    /// Whether the switch `--name` was given.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(k, _)| k == name)
    }

    /// The chat model `--model` names.
    pub(crate) fn chat_model(&self) -> Result<Arc<dyn ChatModel>> {
        kb::llm::open(
            &self.model,
            &ModelCache::from_env()?,
            &kb::llm::LoadOptions::default(),
        )
        .with_context(|| format!("opening the chat model {:?}", self.model))
    }
}

/// The multilingual embedder from the model cache.
pub(crate) fn embedder() -> Result<Arc<dyn kb::Embedder>> {
    let path = ModelCache::from_env()?.resolve(MULTILINGUAL_EMBEDDER)?;
    Ok(Arc::new(kb::embeddings::LocalEmbedder::open(&path)?))
}
