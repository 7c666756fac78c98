//! [`Config`]: a model's hyper-parameters, read from the GGUF metadata of
//! any architecture the CPU engine runs.

use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;

/// The architectures the CPU engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    /// Llama, Mistral, SmolLM.
    Llama,
    /// Qwen 2: attention biases, NeoX rotary layout.
    Qwen2,
    /// Qwen 3: query/key norms, NeoX rotary layout.
    Qwen3,
    /// Gemma 3: query/key norms, norms after attention and feed-forward,
    /// GELU, sliding-window layers, a scaled embedding.
    Gemma3,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) arch: Arch,
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) ffn: usize,
    pub(crate) eps: f32,
    pub(crate) context: usize,
    /// Rotary frequencies, one per rotated pair.
    pub(crate) freqs: Vec<f32>,
    /// NeoX's rotary layout (dimension `i` paired with `i + d/2`).
    pub(crate) neox: bool,
    /// Per layer, the window of positions it attends to (`None`: all).
    pub(crate) windows: Vec<Option<usize>>,
    /// The rotary frequencies of windowed layers (Gemma 3's local layers).
    pub(crate) local_freqs: Vec<f32>,
    /// What scores are multiplied by: `1/√head_dim` unless the
    /// architecture says otherwise.
    pub(crate) attention_scale: f32,
}

impl Config {
    /// The architecture of `gguf`, or an error naming it when the CPU
    /// engine does not run it.
    pub(crate) fn arch(gguf: &GgufFile) -> Result<Arch> {
        let name = gguf.architecture()?;
        match name {
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            _ => Err(LlmError::UnsupportedArchitecture {
                architecture: name.to_string(),
            }),
        }
    }

    pub(crate) fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = Self::arch(gguf)?;
        let name = gguf.architecture()?.to_string();
        let key = |k: &str| format!("{name}.{k}");
        let optional = |k: &str| -> Result<Option<usize>> {
            let k = key(k);
            if gguf.has(&k) {
                gguf.usize(&k).map(Some)
            } else {
                Ok(None)
            }
        };
        let hidden = gguf.usize(&key("embedding_length"))?;
        let heads = gguf.usize(&key("attention.head_count"))?;
        let kv_heads = optional("attention.head_count_kv")?.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(LlmError::metadata(
                &key("attention.head_count_kv"),
                format!("{heads} heads cannot share {kv_heads} key/value heads"),
            ));
        }
        let head_dim = optional("attention.key_length")?.unwrap_or(hidden / heads);
        let rope_dims = optional("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 || head_dim == 0 {
            return Err(LlmError::metadata(
                &key("rope.dimension_count"),
                format!("{rope_dims} does not fit heads of {head_dim}"),
            ));
        }
        let float = |k: &str, default: f32| -> Result<f32> {
            let k = key(k);
            if gguf.has(&k) {
                gguf.f32(&k)
            } else {
                Ok(default)
            }
        };
        let frequencies = |theta: f32, scale: f32| -> Vec<f32> {
            (0..rope_dims / 2)
                .map(|i| scale * theta.powf(-2.0 * i as f32 / rope_dims as f32))
                .collect()
        };
        // Linear rotary scaling (Gemma 3 4B and larger) stretches positions
        // of the global layers only.
        let linear = gguf.has(&key("rope.scaling.type"))
            && gguf.string(&key("rope.scaling.type"))? == "linear";
        let factor = if linear {
            float("rope.scaling.factor", 1.0)?
        } else {
            1.0
        };
        if factor.is_nan() || factor <= 0.0 {
            return Err(LlmError::metadata(
                &key("rope.scaling.factor"),
                format!("{factor} is not a positive number"),
            ));
        }
        let freqs = frequencies(float("rope.freq_base", 10_000.0)?, 1.0 / factor);
        let layers = gguf.usize(&key("block_count"))?;
        let mut windows = vec![None; layers];
        let mut local_freqs = Vec::new();
        let mut attention_scale = 1.0 / (head_dim as f32).sqrt();
        if arch == Arch::Gemma3 {
            // As llama.cpp: every sixth layer (the last of each six) is
            // global; the others attend within the window, with rotary
            // base 10 000 unless the file says otherwise.
            if let Some(window) = optional("attention.sliding_window")?.filter(|&w| w > 0) {
                let period = optional("attention.sliding_window_pattern")?.unwrap_or(6);
                for (l, w) in windows.iter_mut().enumerate() {
                    if period == 0 || l % period < period - 1 {
                        *w = Some(window);
                    }
                }
                local_freqs = frequencies(float("rope.freq_base_swa", 10_000.0)?, 1.0);
            }
            // Gemma 3 27B scales queries by the hidden size per head.
            if layers == 62 {
                attention_scale = 1.0 / ((hidden / heads) as f32).sqrt();
            }
        }
        let eps = gguf.f32(&key("attention.layer_norm_rms_epsilon"))?;
        let vocab = gguf.dims("token_embd.weight")?[0];
        Ok(Config {
            arch,
            vocab,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn: gguf.usize(&key("feed_forward_length"))?,
            eps,
            context: gguf.usize(&key("context_length"))?,
            freqs,
            neox: arch != Arch::Llama,
            windows,
            local_freqs,
            attention_scale,
        })
    }

    pub(crate) fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
