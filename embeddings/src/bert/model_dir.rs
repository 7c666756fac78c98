//! Reading a BERT-family model directory: the encoder config, and the
//! sentence-transformers files that say how to pool, normalise, truncate and
//! prefix.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::bert::Pooling;
use crate::error::{Error, IoContext, Result};

/// What the model directory says about how to use the model.
#[derive(Debug, Clone)]
pub(crate) struct ModelDir {
    pub(crate) dir: PathBuf,
    pub(crate) config: candle_transformers::models::bert::Config,
    /// The raw `config.json`, for the fingerprint.
    pub(crate) config_text: String,
    pub(crate) tokenizer_path: PathBuf,
    pub(crate) weights_path: PathBuf,
    pub(crate) usage: Usage,
}

/// How sentence-transformers says to use a model: what its files in the
/// model directory give, each `None` when not said.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    pub(crate) pooling: Option<Pooling>,
    pub(crate) normalize: Option<bool>,
    pub(crate) max_length: Option<usize>,
    pub(crate) query_prefix: Option<String>,
    pub(crate) passage_prefix: Option<String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).at("reading", path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.into(),
            message: format!("not valid JSON: {e}"),
        })
}

pub(crate) fn required(dir: &Path, name: &str, hint: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile {
            path,
            hint: hint.into(),
        })
    }
}

impl ModelDir {
    /// The directory's own name (of its resolved path), for ids and logs.
    pub(crate) fn name(&self) -> String {
        self.dir
            .canonicalize()
            .unwrap_or_else(|_| self.dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bert".into())
    }

    pub(crate) fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.into(),
                hint: "expected a model directory with config.json, tokenizer.json and model.safetensors \
                       (for the default model run `kb models fetch`)"
                    .into(),
            });
        }
        let config_path = required(dir, "config.json", "the encoder's Hugging Face config")?;
        let tokenizer_path = required(
            dir,
            "tokenizer.json",
            "the fast-tokenizer file; export it with `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`",
        )?;
        let weights_path = required(
            dir,
            "model.safetensors",
            "the weights in safetensors format (pytorch_model.bin is not read)",
        )?;

        let config_text = std::fs::read_to_string(&config_path).at("reading", &config_path)?;
        let raw: Value = serde_json::from_str(&config_text).map_err(|e| Error::Config {
            path: config_path.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("bert");
        if model_type != "bert" {
            return Err(Error::UnsupportedArchitecture {
                path: config_path,
                found: model_type.into(),
            });
        }
        let config: candle_transformers::models::bert::Config = serde_json::from_value(raw)
            .map_err(|e| Error::Config {
                path: config_path.clone(),
                message: format!("not a BERT config: {e}"),
            })?;

        Ok(ModelDir {
            dir: dir.into(),
            config,
            config_text,
            tokenizer_path,
            weights_path,
            usage: Usage::read(dir)?,
        })
    }
}

impl Usage {
    /// Reads `modules.json` (pooling and normalisation modules),
    /// `sentence_bert_config.json` (max length) and
    /// `config_sentence_transformers.json` (query/passage prompts) in `dir`.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let mut usage = Usage::default();
        let mut pooling_dir = dir.join("1_Pooling");
        if let Some(modules) = read_json(&dir.join("modules.json"))? {
            let modules: Vec<ModuleEntry> =
                serde_json::from_value(modules).map_err(|e| Error::Config {
                    path: dir.join("modules.json"),
                    message: format!("not a sentence-transformers module list: {e}"),
                })?;
            usage.normalize = Some(modules.iter().any(|m| m.kind.ends_with(".Normalize")));
            if let Some(pooling) = modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
                pooling_dir = dir.join(&pooling.path);
            }
        }
        let pooling_path = pooling_dir.join("config.json");
        if let Some(pooling) = read_json(&pooling_path)? {
            let pooling: PoolingConfig =
                serde_json::from_value(pooling).map_err(|e| Error::Config {
                    path: pooling_path.clone(),
                    message: format!("not a pooling config: {e}"),
                })?;
            usage.pooling = match (
                pooling.pooling_mode_cls_token,
                pooling.pooling_mode_mean_tokens,
                pooling.pooling_mode_max_tokens,
            ) {
                (true, false, false) => Some(Pooling::Cls),
                (false, true, false) => Some(Pooling::Mean),
                (false, false, true) => Some(Pooling::Max),
                _ => {
                    return Err(Error::Config {
                        path: pooling_path,
                        message: "exactly one of cls, mean or max pooling must be enabled".into(),
                    });
                }
            };
        }
        if let Some(st) = read_json(&dir.join("sentence_bert_config.json"))? {
            usage.max_length = st
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|n| n as usize);
        }
        if let Some(st) = read_json(&dir.join("config_sentence_transformers.json"))? {
            let prompt = |key: &str| {
                st.get("prompts")
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            };
            usage.query_prefix = prompt("query");
            usage.passage_prefix = prompt("passage").or_else(|| prompt("document"));
        }
        Ok(usage)
    }
}
