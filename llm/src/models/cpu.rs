//! [`CpuModel`]: a model of any architecture the CPU engine runs, with the
//! thread pool its kernels run on.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// The most prompt tokens run through the layers at once. Past a hundred
/// or so tokens a step gains no speed (the kernels walk tokens in blocks of
/// 64), while its activations (a few KiB a token per layer buffer) grow
/// with it.
const PROMPT_STEP: usize = 128;

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
    ///
    /// A long prompt runs in steps of [`PROMPT_STEP`] tokens, so its
    /// activations take a fraction of the memory; every token's numbers are
    /// the same whatever the step (the kernels and the attention treat each
    /// token alone), so only memory and the last step's logits change.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        pass: Pass,
    ) -> Result<Vec<f32>> {
        let mut steps = tokens.chunks(PROMPT_STEP).peekable();
        loop {
            let step = steps.next().unwrap_or_default();
            if steps.peek().is_none() {
                return self.forward_step(step, cache, pass);
            }
            self.forward_step(step, cache, pass)?;
        }
    }

    fn forward_step(&self, tokens: &[u32], cache: &mut Cache, pass: Pass) -> Result<Vec<f32>> {
        self.pool.install(|| {
            // A forward pass is dozens of short parallel steps per layer. The
            // other threads stay on call for it, picking up each step's tasks
            // at once instead of sleeping between steps and being woken for
            // every one (which, for a decoded token, costs about as long as a
            // step's work).
            let done = AtomicBool::new(false);
            rayon::scope(|scope| {
                for _ in 1..self.threads {
                    scope.spawn(|_| stay_on_call(&done));
                }
                let result = match &self.weights {
                    Weights::Llama(m) => m.forward(tokens, cache, pass),
                    Weights::Gemma3(m) => m.forward(tokens, cache, pass),
                };
                done.store(true, Ordering::Release);
                result
            })
        })
    }
}

/// Runs the pool's pending tasks until `done`, spinning briefly when there
/// are none and then yielding the processor to anything else that wants it.
fn stay_on_call(done: &AtomicBool) {
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
        } else if idle < 2_000 {
            idle += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
