//! [`Backend`]: where a model runs, and the dispatch between kb's own CPU
//! kernels ([`crate::models`]) and candle on a device ([`crate::device`]).

use crate::device::{DeviceCache, DeviceModel};
use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;
use crate::models::{self, Config, CpuModel, Pass};

/// Where a model runs.
///
/// ```
/// use kb_llm::Backend;
///
/// assert_eq!("cuda:1".parse::<Backend>(), Ok(Backend::Cuda(1)));
/// assert_eq!("cpu".parse::<Backend>(), Ok(Backend::Cpu));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kb's own CPU kernels: 4-bit weights read directly, 8-bit activations.
    Cpu,
    /// candle's tensors on the CPU: the GPU path's code, run where there is
    /// no GPU (slower than [`Backend::Cpu`]; for checking that path).
    CandleCpu,
    /// candle on CUDA GPU `n`; needs kb built with the `cuda` feature.
    Cuda(usize),
}

impl Backend {
    /// The backend used when none is asked for: the first CUDA GPU when kb
    /// was built with the `cuda` feature and one is present, else the CPU.
    pub fn auto() -> Self {
        if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
            Backend::Cuda(0)
        } else {
            Backend::Cpu
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("unknown device {s:?}: use cpu, candle-cpu, cuda or cuda:N");
        match s.trim() {
            "cpu" => Ok(Backend::Cpu),
            "candle-cpu" => Ok(Backend::CandleCpu),
            "cuda" | "gpu" => Ok(Backend::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Backend::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu => f.write_str("cpu"),
            Backend::CandleCpu => f.write_str("candle-cpu"),
            Backend::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A loaded model on its backend.
pub(crate) enum Model {
    Cpu(CpuModel),
    Device(DeviceModel),
}

/// A sequence's key/value cache, kept where its model runs.
#[derive(Debug, Clone)]
pub(crate) enum Cache {
    Cpu(models::Cache),
    Device(DeviceCache),
}

impl Model {
    /// Loads `gguf` for `backend`.
    pub(crate) fn load(
        gguf: &mut GgufFile,
        backend: Backend,
        threads: usize,
        isa: kb_kernels::Isa,
        dense: bool,
    ) -> Result<Self> {
        let device = match backend {
            Backend::Cpu => return CpuModel::load(gguf, threads, isa, dense).map(Model::Cpu),
            Backend::CandleCpu => candle_core::Device::Cpu,
            Backend::Cuda(_) if !cfg!(feature = "cuda") => {
                return Err(LlmError::Device(format!(
                    "{backend} asked for, but kb was built without the `cuda` feature \
                     (cargo build --release --features cuda)"
                )));
            }
            Backend::Cuda(n) => candle_core::Device::new_cuda(n)
                .map_err(|e| LlmError::Device(format!("opening {backend}: {e}")))?,
        };
        DeviceModel::load(gguf, &device, dense).map(Model::Device)
    }

    pub(crate) fn config(&self) -> &Config {
        match self {
            Model::Cpu(m) => m.config(),
            Model::Device(m) => &m.config,
        }
    }

    /// Bytes of weights held.
    pub(crate) fn size(&self) -> usize {
        match self {
            Model::Cpu(m) => m.size(),
            Model::Device(m) => m.size(),
        }
    }

    /// The CPU kernel family the model runs on (`None` on a device).
    pub(crate) fn isa(&self) -> Option<kb_kernels::Isa> {
        match self {
            Model::Cpu(m) => Some(m.isa()),
            Model::Device(_) => None,
        }
    }

    /// CPU threads the model runs on.
    pub(crate) fn threads(&self) -> usize {
        match self {
            Model::Cpu(m) => m.threads(),
            Model::Device(_) => 1,
        }
    }

    /// An empty cache for this model.
    pub(crate) fn cache(&self) -> Cache {
        match self {
            Model::Cpu(m) => Cache::Cpu(models::Cache::new(m.config())),
            Model::Device(m) => Cache::Device(m.cache()),
        }
    }

    /// Runs `tokens` after what `cache` holds; the logits of the last token.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        pass: Pass,
    ) -> Result<Vec<f32>> {
        check(self.config(), tokens, cache.len())?;
        match (self, cache) {
            (Model::Cpu(m), Cache::Cpu(c)) => m.forward(tokens, c, pass),
            (Model::Device(m), Cache::Device(c)) => m.forward(tokens, c),
            _ => Err(LlmError::Device(
                "a cache made for another backend was passed to this model".into(),
            )),
        }
    }
}

/// What any backend needs of its input: ids in the vocabulary, something
/// to run, and room in the context window.
fn check(config: &Config, tokens: &[u32], start: usize) -> Result<()> {
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab) {
        return Err(LlmError::Tokenizer(format!(
            "token id {bad} is outside the vocabulary of {}",
            config.vocab
        )));
    }
    if tokens.is_empty() {
        return Err(LlmError::Options("nothing to run: no tokens".into()));
    }
    if start + tokens.len() > config.context {
        return Err(LlmError::ContextOverflow {
            prompt: start + tokens.len(),
            context: config.context,
        });
    }
    Ok(())
}

impl Cache {
    /// Positions held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Cache::Cpu(c) => c.len(),
            Cache::Device(c) => c.len(),
        }
    }

    /// Bytes the keys and values held take.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Cache::Cpu(c) => c.bytes(),
            Cache::Device(c) => c.bytes(),
        }
    }

    /// Makes room for `positions` in all where the cache grows in host
    /// memory (a device cache grows its own way).
    pub(crate) fn reserve(&mut self, positions: usize) {
        if let Cache::Cpu(c) = self {
            c.reserve(positions);
        }
    }

    /// Keeps the first `len` positions.
    pub(crate) fn truncate(&mut self, len: usize) -> Result<()> {
        match self {
            Cache::Cpu(c) => {
                c.truncate(len);
                Ok(())
            }
            Cache::Device(c) => c.truncate(len),
        }
    }

    /// Drops every position.
    pub(crate) fn clear(&mut self) {
        match self {
            Cache::Cpu(c) => c.truncate(0),
            Cache::Device(c) => c.clear(),
        }
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        match self {
            Cache::Cpu(c) => c.size(),
            Cache::Device(c) => c.size(),
        }
    }
}
