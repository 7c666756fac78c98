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

/// One layer of settings: what a file, the environment or the flags set.
/// These are also the keys `kb.toml` accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        Layer {
            kb_dir: get("KB_DIR").map(PathBuf::from),
            llm: get("KB_LLM"),
            embedder: get("KB_EMBEDDER"),
            home: get("KB_HOME").map(PathBuf::from),
        }
    }

    /// The settings in a `kb.toml`; relative paths are relative to the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut layer: Layer = toml::from_str(&text).with_context(|| {
            format!(
                "config file {} is not valid (accepted keys: {})",
                path.display(),
                KEYS.map(|k| k.0).join(", ")
            )
        })?;
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
            file,
        })
    }

    /// The model cache of this configuration.
    pub fn model_cache(&self) -> models::ModelCache {
        models::ModelCache::new(self.home.value.join("models"))
    }

    /// `(key, value, source)` rows, for display.
    pub fn rows(&self) -> Vec<(&'static str, String, &Source)> {
        vec![
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
        ]
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
        });
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
    fn empty_env_values_are_ignored() {
        let env = Layer::from_env(|name| (name == "KB_LLM").then(String::new));
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
