//! [`CpuModel`]: a model of any architecture the CPU engine runs, with the
//! thread pool its kernels run on.

use kb_kernels::Isa;

use super::config::{Arch, Config};
use super::layers::{Cache, Holding, Pass};
use super::{gemma3, llama};
use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;

enum Weights {
    Llama(llama::Model),
    Gemma3(gemma3::Model),
}

/// A loaded model and its threads.
pub(crate) struct CpuModel {
    weights: Weights,
    pool: rayon::ThreadPool,
    threads: usize,
    isa: Isa,
}

impl CpuModel {
    /// Loads `gguf` for `threads` threads on the kernels of `isa`; with
    /// `dense`, f32 copies of the layer weights are kept for prompts.
    pub(crate) fn load(gguf: &mut GgufFile, threads: usize, isa: Isa, dense: bool) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let holding = Holding { isa, dense };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kb-llm-{i}"))
            .build()
            .map_err(|e| LlmError::Threads(e.to_string()))?;
        // Packing the weights runs on the model's own threads too.
        let weights = pool.install(|| -> Result<Weights> {
            Ok(match config.arch {
                Arch::Gemma3 => Weights::Gemma3(gemma3::Model::from_gguf(gguf, config, holding)?),
                _ => Weights::Llama(llama::Model::from_gguf(gguf, config, holding)?),
            })
        })?;
        Ok(CpuModel {
            weights,
            pool,
            threads,
            isa,
        })
    }

    pub(crate) fn config(&self) -> &Config {
        match &self.weights {
            Weights::Llama(m) => &m.config,
            Weights::Gemma3(m) => &m.config,
        }
    }

    /// Bytes of weights held.
    pub(crate) fn size(&self) -> usize {
        match &self.weights {
            Weights::Llama(m) => m.size(),
            Weights::Gemma3(m) => m.size(),
        }
    }

    /// The threads this model runs on.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// The kernel family this model runs on.
    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model,
    /// appends their keys and values to `cache`, and returns the logits of
    /// the last. The caller has checked the ids, the count and the context
    /// window.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        pass: Pass,
    ) -> Result<Vec<f32>> {
        self.pool.install(|| match &self.weights {
            Weights::Llama(m) => m.forward(tokens, cache, pass),
            Weights::Gemma3(m) => m.forward(tokens, cache, pass),
        })
    }
}
