//! [`DeviceModel`]: the Llama family (Llama, Mistral, Qwen 2, Qwen 3) and
//! Gemma 3 written with candle's tensors, for a device kb's own CPU kernels do not reach: a
//! CUDA GPU, with the `cuda` feature. The same code runs on candle's CPU
//! device, which is how the tests check it against llama.cpp's greedy ids on
//! machines without a GPU.
//!
//! Quantized weights stay quantized on the device (candle's `QMatMul`, which
//! quantizes the activations to 8 bits as llama.cpp does); norms and the
//! key/value cache are f32.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;
use crate::models::{Arch, Config};

/// A model's weights on a candle device.
pub(crate) struct DeviceModel {
    pub(crate) config: Config,
    device: Device,
    embeddings: QTensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: QMatMul,
    /// Rotary frequencies, `1 × rotated/2`.
    freqs: Tensor,
    /// Those of the layers with a sliding window (Gemma 3's local layers).
    local_freqs: Option<Tensor>,
    rotated: usize,
    size: usize,
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Gemma 3's norms of the attention's and the feed-forward's outputs.
    post_attention_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
}

struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// The key/value cache of one sequence on the device: per layer, keys and
/// values `1 × kv_heads × positions × head_dim`. Cloning shares the tensors.
#[derive(Debug, Clone)]
pub(crate) struct DeviceCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl DeviceCache {
    /// Positions held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the keys and values held take.
    pub(crate) fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .flat_map(|(k, v)| [k, v])
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Keeps the first `len` positions.
    pub(crate) fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            self.clear();
            return Ok(());
        }
        if len >= self.len {
            return Ok(());
        }
        for slot in &mut self.layers {
            if let Some((k, v)) = slot.take() {
                *slot = Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?));
            }
        }
        self.len = len;
        Ok(())
    }

    /// Drops every position.
    pub(crate) fn clear(&mut self) {
        self.layers.iter_mut().for_each(|slot| *slot = None);
        self.len = 0;
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }
}

impl DeviceModel {
    /// Loads the weights of `gguf` onto `device`: as stored, or with `dense`
    /// dequantized to f32 (more memory, f32 arithmetic throughout).
    pub(crate) fn load(gguf: &mut GgufFile, device: &Device, dense: bool) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let mut size = 0usize;
        let mut quantized = |gguf: &mut GgufFile, name: &str| -> Result<QTensor> {
            let t = gguf.qtensor_on(name, device)?;
            size += t.storage_size_in_bytes();
            Ok(t)
        };
        let matmul = |t: QTensor| -> Result<QMatMul> {
            Ok(if dense {
                QMatMul::Tensor(t.dequantize(device)?.to_dtype(DType::F32)?)
            } else {
                QMatMul::from_qtensor(t)?
            })
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |t: &str| format!("blk.{i}.{t}");
            let mut vector = |gguf: &mut GgufFile, t: &str| -> Result<Option<Tensor>> {
                let n = name(t);
                if !gguf.has_tensor(&n) {
                    return Ok(None);
                }
                let t = quantized(gguf, &n)?;
                Ok(Some(t.dequantize(device)?.to_dtype(DType::F32)?))
            };
            let attn_norm = vector(gguf, "attn_norm.weight")?;
            let ffn_norm = vector(gguf, "ffn_norm.weight")?;
            let q_norm = vector(gguf, "attn_q_norm.weight")?;
            let k_norm = vector(gguf, "attn_k_norm.weight")?;
            let post_attention_norm = vector(gguf, "post_attention_norm.weight")?;
            let post_ffn_norm = vector(gguf, "post_ffw_norm.weight")?;
            let mut linear = |gguf: &mut GgufFile, t: &str| -> Result<Linear> {
                let weight = matmul(quantized(gguf, &name(&format!("{t}.weight")))?)?;
                let bias_name = name(&format!("{t}.bias"));
                let bias = if gguf.has_tensor(&bias_name) {
                    Some(
                        quantized(gguf, &bias_name)?
                            .dequantize(device)?
                            .to_dtype(DType::F32)?,
                    )
                } else {
                    None
                };
                Ok(Linear { weight, bias })
            };
            let required = |t: Option<Tensor>, what: &str| {
                t.ok_or_else(|| LlmError::tensor(&name(what), "missing from the file"))
            };
            layers.push(Layer {
                attn_norm: required(attn_norm, "attn_norm.weight")?,
                q: linear(gguf, "attn_q")?,
                k: linear(gguf, "attn_k")?,
                v: linear(gguf, "attn_v")?,
                o: linear(gguf, "attn_output")?,
                q_norm,
                k_norm,
                ffn_norm: required(ffn_norm, "ffn_norm.weight")?,
                gate: linear(gguf, "ffn_gate")?,
                up: linear(gguf, "ffn_up")?,
                down: linear(gguf, "ffn_down")?,
                post_attention_norm,
                post_ffn_norm,
            });
        }
        let embeddings = quantized(gguf, "token_embd.weight")?;
        let output_name = if gguf.has_tensor("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        // The output layer stays as stored, as in the CPU engine and llama.cpp:
        // the next-token scores then round the same way.
        let output = QMatMul::from_qtensor(quantized(gguf, output_name)?)?;
        let output_norm = quantized(gguf, "output_norm.weight")?
            .dequantize(device)?
            .to_dtype(DType::F32)?;
        let rotated = config.freqs.len() * 2;
        let freqs = Tensor::from_vec(config.freqs.clone(), (1, rotated / 2), device)?;
        let local_freqs = (!config.local_freqs.is_empty())
            .then(|| Tensor::from_vec(config.local_freqs.clone(), (1, rotated / 2), device))
            .transpose()?;
        Ok(DeviceModel {
            config,
            device: device.clone(),
            embeddings,
            layers,
            output_norm,
            output,
            freqs,
            local_freqs,
            rotated,
            size,
        })
    }

    /// Bytes of weights held on the device.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// An empty cache for this model.
    pub(crate) fn cache(&self) -> DeviceCache {
        DeviceCache {
            layers: vec![None; self.config.layers],
            len: 0,
        }
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model, appends
    /// their keys and values to `cache`, and returns the logits of the last.
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut DeviceCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        let start = cache.len;
        let (heads, kv_heads, head_dim) = (c.heads, c.kv_heads, c.head_dim);
        let ids = Tensor::new(tokens, &self.device)?;
        let gemma = c.arch == Arch::Gemma3;
        let mut x = self.embeddings.embedding(&ids)?.to_dtype(DType::F32)?;
        if gemma {
            x = (x * (c.hidden as f64).sqrt())?;
        }
        let positions: Vec<f32> = (start..start + n).map(|p| p as f32).collect();
        let positions = Tensor::from_vec(positions, (n, 1), &self.device)?;
        let angles = |freqs: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            let angles = positions.broadcast_mul(freqs)?;
            Ok((angles.cos()?, angles.sin()?))
        };
        let global = angles(&self.freqs)?;
        let local = self.local_freqs.as_ref().map(angles).transpose()?;
        // One mask per window size: every position before each query for
        // the global layers, the last `window` for the local ones.
        let mut masks: Vec<(Option<usize>, Option<Tensor>)> = Vec::new();
        for &window in &c.windows {
            if !masks.iter().any(|(w, _)| *w == window) {
                let mask = causal_mask(n, start, window, &self.device)?;
                masks.push((window, mask));
            }
        }
        let scale = c.attention_scale as f64;

        for ((layer, slot), &window) in self.layers.iter().zip(&mut cache.layers).zip(&c.windows) {
            let (cos, sin) = match (&local, window) {
                (Some(local), Some(_)) => (&local.0, &local.1),
                _ => (&global.0, &global.1),
            };
            let mask = masks
                .iter()
                .find(|(w, _)| *w == window)
                .and_then(|(_, m)| m.as_ref());
            let normed = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.eps)?;
            let heads_of = |t: Tensor, count: usize| -> candle_core::Result<Tensor> {
                t.reshape((1, n, count, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let mut q = heads_of(layer.q.forward(&normed)?, heads)?;
            let mut k = heads_of(layer.k.forward(&normed)?, kv_heads)?;
            let v = heads_of(layer.v.forward(&normed)?, kv_heads)?;
            if let Some(w) = &layer.q_norm {
                q = candle_nn::ops::rms_norm(&q, w, c.eps)?;
            }
            if let Some(w) = &layer.k_norm {
                k = candle_nn::ops::rms_norm(&k, w, c.eps)?;
            }
            let q = self.rotate(&q, cos, sin)?;
            let k = self.rotate(&k, cos, sin)?;
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            let total = start + n;
            // Each group of query heads shares one key/value head.
            let group = heads / kv_heads;
            let shared = |t: &Tensor| -> candle_core::Result<Tensor> {
                if group == 1 {
                    return Ok(t.clone());
                }
                t.unsqueeze(2)?
                    .expand((1, kv_heads, group, total, head_dim))?
                    .reshape((1, heads, total, head_dim))
            };
            let (k, v) = (shared(&k)?, shared(&v)?);
            let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            if let Some(mask) = mask {
                scores = scores.broadcast_add(mask)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = probs
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((n, heads * head_dim))?;
            let mut attended = layer.o.forward(&attended)?;
            if let Some(w) = &layer.post_attention_norm {
                attended = candle_nn::ops::rms_norm(&attended, w, c.eps)?;
            }
            x = (x + attended)?;
            let normed = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.eps)?;
            let gate = layer.gate.forward(&normed)?;
            // Gemma: GELU (tanh approximation); the Llama family: SiLU.
            let gate = if gemma { gate.gelu()? } else { gate.silu()? };
            let mut out = layer.down.forward(&(gate * layer.up.forward(&normed)?)?)?;
            if let Some(w) = &layer.post_ffn_norm {
                out = candle_nn::ops::rms_norm(&out, w, c.eps)?;
            }
            x = (x + out)?;
        }
        cache.len = start + n;
        let last = x.narrow(0, n - 1, 1)?;
        let normed = candle_nn::ops::rms_norm(&last, &self.output_norm, c.eps)?;
        let logits = self.output.forward(&normed)?;
        Ok(logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Rotary position embedding of `t` (`1 × heads × n × head_dim`) on its
    /// first `rotated` dimensions: adjacent pairs for Llama, halves for Qwen.
    fn rotate(&self, t: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let head_dim = t.dim(D::Minus1)?;
        let (part, rest) = if self.rotated == head_dim {
            (t.clone(), None)
        } else {
            (
                t.narrow(D::Minus1, 0, self.rotated)?.contiguous()?,
                Some(t.narrow(D::Minus1, self.rotated, head_dim - self.rotated)?),
            )
        };
        let rotated = if self.config.neox {
            candle_nn::rotary_emb::rope(&part, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope_i(&part, cos, sin)?
        };
        match rest {
            Some(rest) => Tensor::cat(&[&rotated, &rest], D::Minus1)?.contiguous(),
            None => Ok(rotated),
        }
    }
}

/// `n × (start + n)`: 0 where query `i` (at position `start + i`) may see
/// key `j` — `j` not later, and within the last `window` positions when
/// there is one — and −∞ elsewhere; `None` where a query sees every key (one
/// query, no window cutting it off).
fn causal_mask(
    n: usize,
    start: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    let total = start + n;
    let cut = window.is_some_and(|w| total > w);
    if n == 1 && !cut {
        return Ok(None);
    }
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            let position = start + i;
            (0..total).map(move |j| {
                let too_old = window.is_some_and(|w| position >= j + w);
                if j > position || too_old {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (n, total), device).map(Some)
}
