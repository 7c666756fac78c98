//! The effective configuration: defaults, then `kb.toml`, then `KB_*`
//! environment variables, then command-line flags, each later layer winning.
//! Every value remembers where it came from, for `kb config show`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kb_core::models;
use serde::{Deserialize, Serialize};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", content = "name", rename_all = "lowercase")]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// Which reranker reorders the best hits of a search: `none`, `llm` or
/// `cross-encoder:DIR` (as `kb.toml` and `--rerank` write it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RerankKind {
    /// None: the fused order stands.
    #[default]
    None,
    /// The configured local chat model, asked "does this passage answer the
    /// question?" per passage.
    Llm,
    /// A BERT cross-encoder (a `BertForSequenceClassification` directory,
    /// such as ms-marco-MiniLM-L-6-v2) reading the question and each passage
    /// together.
    CrossEncoder(std::path::PathBuf),
}

impl std::str::FromStr for RerankKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" | "off" => Ok(RerankKind::None),
            "llm" => Ok(RerankKind::Llm),
            other => match other.strip_prefix("cross-encoder:") {
                Some(dir) if !dir.is_empty() => Ok(RerankKind::CrossEncoder(dir.into())),
                _ => anyhow::bail!(
                    "unknown reranker {other:?}; use none, llm or cross-encoder:DIR \
                     (a BERT cross-encoder's model directory)"
                ),
            },
        }
    }
}

impl TryFrom<String> for RerankKind {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<RerankKind> for String {
    fn from(kind: RerankKind) -> String {
        match kind {
            RerankKind::None => "none".into(),
            RerankKind::Llm => "llm".into(),
            RerankKind::CrossEncoder(dir) => format!("cross-encoder:{}", dir.display()),
        }
    }
}

/// How search ranks: the `[retrieval]` table of `kb.toml`. The defaults are
/// the settings that did best on kb's evaluation sets (`docs/knowledge-base.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retrieval {
    /// How the two rankings combine: `rrf` (reciprocal ranks) or `scores`
    /// (each index's scores, min-max normalised).
    pub fusion: kb_retrievers::FusionMethod,
    /// Weight of the vector ranking in the fusion.
    pub vector_weight: f32,
    /// Weight of the BM25 ranking.
    pub bm25_weight: f32,
    /// RRF's constant k in `weight / (k + rank)`.
    pub rrf_k: f32,
    /// Candidates taken from each index, as a multiple of the hits asked for.
    pub candidates: usize,
    /// The reranker: `none`, `llm` or `cross-encoder:DIR`.
    pub rerank: RerankKind,
    /// How many of the best fused hits the reranker reorders.
    pub rerank_depth: usize,
    /// Whether a query also looks for the other language's name of the
    /// glossary terms it contains (`张量并行` for "tensor
    /// parallelism"), from the term pairs the documents define.
    pub expand: bool,
}

impl Default for Retrieval {
    fn default() -> Self {
        let fusion = kb_retrievers::Fusion::default();
        Retrieval {
            fusion: fusion.method,
            vector_weight: fusion.vector_weight,
            bm25_weight: fusion.bm25_weight,
            rrf_k: fusion.rrf_k,
            candidates: fusion.candidates_factor,
            rerank: RerankKind::None,
            rerank_depth: 10,
            expand: true,
        }
    }
}

impl Retrieval {
    /// The fusion these settings describe.
    pub fn fusion(&self) -> kb_retrievers::Fusion {
        kb_retrievers::Fusion {
            method: self.fusion,
            rrf_k: self.rrf_k,
            vector_weight: self.vector_weight,
            bm25_weight: self.bm25_weight,
            candidates_factor: self.candidates.max(1),
        }
    }

    fn check(&self) -> Result<()> {
        let weights = [self.vector_weight, self.bm25_weight];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().all(|w| *w == 0.0) {
            anyhow::bail!(
                "retrieval weights must be finite, not negative, and not both 0 (got vector_weight = {}, bm25_weight = {})",
                self.vector_weight,
                self.bm25_weight
            );
        }
        if !self.rrf_k.is_finite() || self.rrf_k < 0.0 {
            anyhow::bail!("retrieval.rrf_k must be a number ≥ 0 (got {})", self.rrf_k);
        }
        Ok(())
    }
}

/// One layer of settings: what a file, the environment or the flags set.
/// These are also the keys `kb.toml` accepts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// The knowledge-base directory.
    pub kb_dir: Option<PathBuf>,
    /// The chat model: a catalog name or a GGUF path.
    pub llm: Option<String>,
    /// The embedder: a catalog name or a model directory.
    pub embedder: Option<String>,
    /// kb's home (the model cache is `home/models`).
    pub home: Option<PathBuf>,
    /// How search ranks (`[retrieval]`; files only).
    pub retrieval: Option<Retrieval>,
    /// Where the vectors live (`[vector]`).
    #[serde(default)]
    pub vector: VectorLayer,
}

/// The `[vector]` table of `kb.toml`, or its `KB_VECTOR_*` variables: a
/// Qdrant server or cluster for the vectors instead of the embedded store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorLayer {
    /// The server's gRPC URL (`http://host:6334`, `https://…` for TLS).
    pub url: Option<String>,
    /// Its API key.
    pub api_key: Option<String>,
    /// The collection.
    pub collection: Option<String>,
    /// Shards of a new collection.
    pub shards: Option<u32>,
    /// Copies of each shard in a new collection.
    pub replicas: Option<u32>,
    /// Replicas that must acknowledge each write, in a new collection.
    pub write_consistency: Option<u32>,
    /// Seconds one request may take.
    pub timeout_secs: Option<u64>,
}

/// (field, environment variable) of the `[vector]` settings.
const VECTOR_ENV: [(&str, &str); 7] = [
    ("url", "KB_VECTOR_URL"),
    ("api_key", "KB_VECTOR_API_KEY"),
    ("collection", "KB_VECTOR_COLLECTION"),
    ("shards", "KB_VECTOR_SHARDS"),
    ("replicas", "KB_VECTOR_REPLICAS"),
    ("write_consistency", "KB_VECTOR_WRITE_CONSISTENCY"),
    ("timeout_secs", "KB_VECTOR_TIMEOUT_SECS"),
];

impl VectorLayer {
    fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<u32>> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("{name}={v:?} is not a whole number ≥ 1"))
                })
                .transpose()
        };
        Ok(VectorLayer {
            url: get("KB_VECTOR_URL"),
            api_key: get("KB_VECTOR_API_KEY"),
            collection: get("KB_VECTOR_COLLECTION"),
            shards: number("KB_VECTOR_SHARDS")?,
            replicas: number("KB_VECTOR_REPLICAS")?,
            write_consistency: number("KB_VECTOR_WRITE_CONSISTENCY")?,
            timeout_secs: number("KB_VECTOR_TIMEOUT_SECS")?.map(u64::from),
        })
    }
}

/// Where the vectors live, each value with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vector {
    /// The server's URL; unset, the embedded store in the knowledge base's
    /// directory.
    pub url: Setting<Option<String>>,
    /// The API key (never shown).
    #[serde(serialize_with = "hidden")]
    pub api_key: Setting<Option<String>>,
    pub collection: Setting<String>,
    pub shards: Setting<Option<u32>>,
    pub replicas: Setting<Option<u32>>,
    pub write_consistency: Setting<Option<u32>>,
    pub timeout_secs: Setting<u64>,
}

fn hidden<S: serde::Serializer>(
    key: &Setting<Option<String>>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    Setting {
        value: key.value.as_ref().map(|_| "(set)"),
        source: key.source.clone(),
    }
    .serialize(serializer)
}

impl Vector {
    /// The backend these settings name.
    pub fn backend(&self) -> kb_retrievers::VectorBackend {
        match &self.url.value {
            None => kb_retrievers::VectorBackend::Embedded,
            Some(url) => kb_retrievers::VectorBackend::Qdrant(kb_retrievers::QdrantOptions {
                url: url.clone(),
                api_key: self.api_key.value.clone(),
                collection: self.collection.value.clone(),
                shards: self.shards.value,
                replicas: self.replicas.value,
                write_consistency: self.write_consistency.value,
                timeout: std::time::Duration::from_secs(self.timeout_secs.value.max(1)),
                ..kb_retrievers::QdrantOptions::new(url.clone())
            }),
        }
    }

    fn rows(&self) -> Vec<(&'static str, String, &Source)> {
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let number = |v: Option<u32>| show(v.map(|n| n.to_string()));
        vec![
            (
                "vector.url",
                show(self.url.value.clone()).replace('-', "- (embedded)"),
                &self.url.source,
            ),
            (
                "vector.api_key",
                show(self.api_key.value.as_ref().map(|_| "(set)".into())),
                &self.api_key.source,
            ),
            (
                "vector.collection",
                self.collection.value.clone(),
                &self.collection.source,
            ),
            (
                "vector.shards",
                number(self.shards.value),
                &self.shards.source,
            ),
            (
                "vector.replicas",
                number(self.replicas.value),
                &self.replicas.source,
            ),
            (
                "vector.write_consistency",
                number(self.write_consistency.value),
                &self.write_consistency.source,
            ),
            (
                "vector.timeout_secs",
                self.timeout_secs.value.to_string(),
                &self.timeout_secs.source,
            ),
        ]
    }
}

/// The first of (flag, env, file) that is set, with its source, else the
/// default.
fn layered<T>(
    flag: (Option<T>, &'static str),
    env: (Option<T>, &'static str),
    file: (Option<T>, &dyn Fn() -> Source),
    default: T,
) -> Setting<T> {
    if let Some(value) = flag.0 {
        Setting {
            value,
            source: Source::Flag(flag.1),
        }
    } else if let Some(value) = env.0 {
        Setting {
            value,
            source: Source::Env(env.1),
        }
    } else if let Some(value) = file.0 {
        Setting {
            value,
            source: file.1(),
        }
    } else {
        Setting {
            value: default,
            source: Source::Default,
        }
    }
}

/// (key, environment variable, flag) of every setting.
const KEYS: [(&str, &str, &str); 4] = [
    ("kb_dir", "KB_DIR", "--kb"),
    ("llm", "KB_LLM", "--llm"),
    ("embedder", "KB_EMBEDDER", "--embedder"),
    ("home", "KB_HOME", "--home"),
];

impl Layer {
    /// The settings found in environment variables (read through `var`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        Ok(Layer {
            kb_dir: get("KB_DIR").map(PathBuf::from),
            llm: get("KB_LLM"),
            embedder: get("KB_EMBEDDER"),
            home: get("KB_HOME").map(PathBuf::from),
            retrieval: None,
            vector: VectorLayer::from_env(get)?,
        })
    }

    /// The settings in a `kb.toml`; relative paths are relative to the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut layer: Layer = toml::from_str(&text).with_context(|| {
            format!(
                "config file {} is not valid (accepted keys: {}, and [retrieval] and [vector] tables)",
                path.display(),
                KEYS.map(|k| k.0).join(", ")
            )
        })?;
        if let Some(retrieval) = &layer.retrieval {
            retrieval
                .check()
                .with_context(|| format!("config file {}", path.display()))?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in [&mut layer.kb_dir, &mut layer.home].into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(layer)
    }
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub kb_dir: Setting<PathBuf>,
    pub llm: Setting<String>,
    pub embedder: Setting<String>,
    pub home: Setting<PathBuf>,
    /// How search ranks, from the file's `[retrieval]` table or the defaults.
    pub retrieval: Setting<Retrieval>,
    /// Where the vectors live.
    pub vector: Vector,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

impl Config {
    /// Resolves the configuration. The file is `explicit_file` (from `--config`
    /// or `KB_CONFIG`) if given, which must exist; otherwise `kb.toml` in the
    /// knowledge-base directory, if it exists.
    pub fn load(flags: Layer, env: Layer, explicit_file: Option<PathBuf>) -> Result<Self> {
        let kb_dir_for_file = flags
            .kb_dir
            .clone()
            .or_else(|| env.kb_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".kb"));
        let (file, file_layer) = match explicit_file {
            Some(path) => {
                let layer = Layer::from_file(&path)?;
                (Some(path), layer)
            }
            None => {
                let path = kb_dir_for_file.join("kb.toml");
                if path.is_file() {
                    let layer = Layer::from_file(&path)?;
                    (Some(path), layer)
                } else {
                    (None, Layer::default())
                }
            }
        };
        let file_source = || Source::File(file.clone().unwrap_or_default());
        let pick = |index: usize,
                    flag: Option<String>,
                    env: Option<String>,
                    file: Option<String>,
                    default: String|
         -> Setting<String> {
            let (key_env, key_flag) = (KEYS[index].1, KEYS[index].2);
            if let Some(value) = flag {
                Setting {
                    value,
                    source: Source::Flag(key_flag),
                }
            } else if let Some(value) = env {
                Setting {
                    value,
                    source: Source::Env(key_env),
                }
            } else if let Some(value) = file {
                Setting {
                    value,
                    source: file_source(),
                }
            } else {
                Setting {
                    value: default,
                    source: Source::Default,
                }
            }
        };
        let path_string = |p: Option<PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
        let as_path = |s: Setting<String>| Setting {
            value: PathBuf::from(s.value),
            source: s.source,
        };
        let default_home = models::kb_home()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| ".kb-home".into());
        Ok(Config {
            kb_dir: as_path(pick(
                0,
                path_string(flags.kb_dir),
                path_string(env.kb_dir),
                path_string(file_layer.kb_dir),
                ".kb".into(),
            )),
            llm: pick(
                1,
                flags.llm,
                env.llm,
                file_layer.llm,
                models::DEFAULT_LLM.into(),
            ),
            embedder: pick(
                2,
                flags.embedder,
                env.embedder,
                file_layer.embedder,
                models::MULTILINGUAL_EMBEDDER.into(),
            ),
            home: as_path(pick(
                3,
                path_string(flags.home),
                path_string(env.home),
                path_string(file_layer.home),
                default_home,
            )),
            vector: {
                let (flag, env, file) = (flags.vector, env.vector, file_layer.vector);
                let file_source: &dyn Fn() -> Source = &file_source;
                let env_name = |field: &str| {
                    VECTOR_ENV
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map_or("", |(_, e)| e)
                };
                Vector {
                    url: layered(
                        (flag.url.map(Some), "--vector-url"),
                        (env.url.map(Some), env_name("url")),
                        (file.url.map(Some), file_source),
                        None,
                    ),
                    api_key: layered(
                        (None, ""),
                        (env.api_key.map(Some), env_name("api_key")),
                        (file.api_key.map(Some), file_source),
                        None,
                    ),
                    collection: layered(
                        (flag.collection, "--collection"),
                        (env.collection, env_name("collection")),
                        (file.collection, file_source),
                        kb_retrievers::QdrantOptions::DEFAULT_COLLECTION.into(),
                    ),
                    shards: layered(
                        (None, ""),
                        (env.shards.map(Some), env_name("shards")),
                        (file.shards.map(Some), file_source),
                        None,
                    ),
                    replicas: layered(
                        (None, ""),
                        (env.replicas.map(Some), env_name("replicas")),
                        (file.replicas.map(Some), file_source),
                        None,
                    ),
                    write_consistency: layered(
                        (None, ""),
                        (
                            env.write_consistency.map(Some),
                            env_name("write_consistency"),
                        ),
                        (file.write_consistency.map(Some), file_source),
                        None,
                    ),
                    timeout_secs: layered(
                        (None, ""),
                        (env.timeout_secs, env_name("timeout_secs")),
                        (file.timeout_secs, file_source),
                        10,
                    ),
                }
            },
            retrieval: match file_layer.retrieval {
                Some(value) => Setting {
                    value,
                    source: file_source(),
                },
                None => Setting {
                    value: Retrieval::default(),
                    source: Source::Default,
                },
            },
            file,
        })
    }

    /// The model cache of this configuration.
    pub fn model_cache(&self) -> models::ModelCache {
        models::ModelCache::new(self.home.value.join("models"))
    }

    /// `(key, value, source)` rows, for display.
    pub fn rows(&self) -> Vec<(&'static str, String, &Source)> {
        let mut rows = vec![
            (
                "kb_dir",
                self.kb_dir.value.display().to_string(),
                &self.kb_dir.source,
            ),
            ("llm", self.llm.value.clone(), &self.llm.source),
            (
                "embedder",
                self.embedder.value.clone(),
                &self.embedder.source,
            ),
            (
                "home",
                self.home.value.display().to_string(),
                &self.home.source,
            ),
            (
                "retrieval",
                toml::to_string(&self.retrieval.value)
                    .unwrap_or_default()
                    .trim()
                    .replace('\n', ", "),
                &self.retrieval.source,
            ),
        ];
        rows.extend(self.vector.rows());
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("kb.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "llm = \"file-llm\"\nembedder = \"file-embedder\"\nhome = \"models-home\"\n",
        );
        let env = Layer::from_env(|name| match name {
            "KB_LLM" => Some("env-llm".into()),
            "KB_EMBEDDER" => Some("env-embedder".into()),
            _ => None,
        })
        .expect("env");
        let flags = Layer {
            llm: Some("flag-llm".into()),
            ..Layer::default()
        };
        let config = Config::load(flags, env, Some(file.clone())).expect("load");
        assert_eq!(config.llm.value, "flag-llm");
        assert_eq!(config.llm.source, Source::Flag("--llm"));
        assert_eq!(config.embedder.value, "env-embedder");
        assert_eq!(config.embedder.source, Source::Env("KB_EMBEDDER"));
        assert_eq!(config.home.value, dir.path().join("models-home"));
        assert_eq!(config.home.source, Source::File(file));
        assert_eq!(config.kb_dir.value, PathBuf::from(".kb"));
        assert_eq!(config.kb_dir.source, Source::Default);
    }

    #[test]
    fn kb_toml_in_the_kb_dir_is_found_without_a_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "embedder = \"/models/bge-small-zh\"\n");
        let flags = Layer {
            kb_dir: Some(dir.path().to_path_buf()),
            ..Layer::default()
        };
        let config = Config::load(flags, Layer::default(), None).expect("load");
        assert_eq!(config.embedder.value, "/models/bge-small-zh");
        assert_eq!(config.file, Some(dir.path().join("kb.toml")));
    }

    #[test]
    fn the_retrieval_table_sets_fusion_and_reranking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "[retrieval]\nbm25_weight = 0.5\nrerank = \"llm\"\nrerank_depth = 6\n",
        );
        let config =
            Config::load(Layer::default(), Layer::default(), Some(file.clone())).expect("load");
        let retrieval = &config.retrieval.value;
        assert_eq!(retrieval.bm25_weight, 0.5);
        assert_eq!(
            retrieval.vector_weight, 1.0,
            "unset keys keep their default"
        );
        assert_eq!(retrieval.rerank, RerankKind::Llm);
        assert_eq!(retrieval.fusion().bm25_weight, 0.5);
        assert_eq!(config.retrieval.source, Source::File(file));
        let shown = config.rows();
        assert!(
            shown
                .iter()
                .any(|(k, v, _)| *k == "retrieval" && v.contains("rerank_depth = 6"))
        );

        let bad = write(dir.path(), "[retrieval]\nvector_weight = -1\n");
        let err = Config::load(Layer::default(), Layer::default(), Some(bad)).unwrap_err();
        assert!(format!("{err:#}").contains("weights must be"), "{err:#}");
        let typo = write(dir.path(), "[retrieval]\nrerank = \"cross\"\n");
        let err = Config::load(Layer::default(), Layer::default(), Some(typo)).unwrap_err();
        assert!(format!("{err:#}").contains("cross-encoder:DIR"), "{err:#}");
        let cross = write(
            dir.path(),
            "[retrieval]\nrerank = \"cross-encoder:models/ms-marco\"\n",
        );
        let config = Config::load(Layer::default(), Layer::default(), Some(cross)).expect("load");
        assert_eq!(
            config.retrieval.value.rerank,
            RerankKind::CrossEncoder("models/ms-marco".into())
        );
    }

    #[test]
    fn vector_settings_layer_and_name_a_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "[vector]\nurl = \"http://file:6334\"\ncollection = \"notes\"\nshards = 3\napi_key = \"k\"\n",
        );
        let env = Layer::from_env(|name| match name {
            "KB_VECTOR_URL" => Some("http://env:6334".into()),
            "KB_VECTOR_REPLICAS" => Some("2".into()),
            _ => None,
        })
        .expect("env");
        let config = Config::load(Layer::default(), env, Some(file.clone())).expect("load");
        let vector = &config.vector;
        assert_eq!(vector.url.value.as_deref(), Some("http://env:6334"));
        assert_eq!(vector.url.source, Source::Env("KB_VECTOR_URL"));
        assert_eq!(vector.collection.value, "notes");
        assert_eq!(vector.collection.source, Source::File(file));
        match vector.backend() {
            kb_retrievers::VectorBackend::Qdrant(options) => {
                assert_eq!(
                    (options.shards, options.replicas, options.api_key.as_deref()),
                    (Some(3), Some(2), Some("k"))
                );
            }
            other => panic!("{other:?}"),
        }
        // The key is never shown.
        let shown = serde_json::to_string(&config).expect("json");
        assert!(!shown.contains("\"k\""), "{shown}");
        assert!(config.rows().iter().all(|(_, v, _)| v != "k"));
        // Unset, the vectors stay in the knowledge base's directory.
        let config = Config::load(Layer::default(), Layer::default(), None).expect("load");
        assert_eq!(
            config.vector.backend(),
            kb_retrievers::VectorBackend::Embedded
        );
        let err = Layer::from_env(|name| (name == "KB_VECTOR_SHARDS").then(|| "three".into()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("KB_VECTOR_SHARDS"), "{err:#}");
    }

    #[test]
    fn empty_env_values_are_ignored() {
        let env = Layer::from_env(|name| (name == "KB_LLM").then(String::new)).expect("env");
        assert_eq!(env.llm, None);
    }

    #[test]
    fn unknown_keys_and_missing_explicit_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "lmm = \"typo\"\n");
        let err = Config::load(Layer::default(), Layer::default(), Some(file)).unwrap_err();
        assert!(format!("{err:#}").contains("lmm"), "{err:#}");
        let err = Config::load(
            Layer::default(),
            Layer::default(),
            Some(dir.path().join("absent.toml")),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("absent.toml"), "{err:#}");
    }
}
