//! Gemma 3 on the CPU.
//!
//! Differences from Llama: the embedding is scaled by `√hidden`; queries
//! and keys are RMS-normed per head, queries then scaled by the model's
//! attention scale; the attention and feed-forward outputs are RMS-normed
//! again before they join the residual stream; the feed-forward gate is
//! GELU (tanh approximation, through an f16 table as ggml computes it); five
//! layers of every six attend only within a sliding window, with their own
//! rotary base. Norm weights are stored with Gemma's `1 +` folded in.

use std::sync::Arc;

use super::config::Config;
use super::layers::{
    Attention, Cache, Holding, Input, Linear, Matrix, Pass, attention, embed, embeddings, logits,
    vector, weights_size,
};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::ops::{self, Rotary};

struct Layer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Linear,
    post_attention_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Vec<f32>,
}

/// A Gemma 3 model's weights.
pub(crate) struct Model {
    pub(crate) config: Config,
    embeddings: Arc<Matrix>,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Linear,
    holding: Holding,
}

impl Model {
    /// Loads the weights of `gguf` (`config` read from it).
    pub(crate) fn from_gguf(gguf: &mut GgufFile, config: Config, holding: Holding) -> Result<Self> {
        let (h, q, kv, ffn) = (config.hidden, config.q_dim(), config.kv_dim(), config.ffn);
        let hd = config.head_dim;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |t: &str| format!("blk.{i}.{t}");
            let mut linear =
                |t: &str, rows, cols| Linear::load(gguf, &name(t), rows, cols, holding);
            let (wq, wk, wv, wo) = (
                linear("attn_q.weight", q, h)?,
                linear("attn_k.weight", kv, h)?,
                linear("attn_v.weight", kv, h)?,
                linear("attn_output.weight", h, q)?,
            );
            let (gate, up, down) = (
                linear("ffn_gate.weight", ffn, h)?,
                linear("ffn_up.weight", ffn, h)?,
                linear("ffn_down.weight", h, ffn)?,
            );
            layers.push(Layer {
                attn_norm: vector(gguf, &name("attn_norm.weight"), h)?,
                q: wq,
                k: wk,
                v: wv,
                q_norm: vector(gguf, &name("attn_q_norm.weight"), hd)?,
                k_norm: vector(gguf, &name("attn_k_norm.weight"), hd)?,
                o: wo,
                post_attention_norm: vector(gguf, &name("post_attention_norm.weight"), h)?,
                ffn_norm: vector(gguf, &name("ffn_norm.weight"), h)?,
                gate,
                up,
                down,
                post_ffn_norm: vector(gguf, &name("post_ffw_norm.weight"), h)?,
            });
        }
        let (embeddings, output) = embeddings(gguf, &config, holding)?;
        let output_norm = vector(gguf, "output_norm.weight", h)?;
        Ok(Model {
            config,
            embeddings,
            layers,
            output_norm,
            output,
            holding,
        })
    }

    /// Bytes of weights held.
    pub(crate) fn size(&self) -> usize {
        let layers = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]);
        weights_size(layers, &self.embeddings, &self.output)
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model,
    /// appends their keys and values to `cache`, and returns the logits of
    /// the last.
    pub(crate) fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        pass: Pass,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let isa = self.holding.isa;
        let (n, h) = (tokens.len(), c.hidden);
        let start = cache.len();
        let global = Rotary::new(&c.freqs, start, n);
        let local = Rotary::new(&c.local_freqs, start, n);
        let mut x = embed(&self.embeddings, tokens, h, Some((h as f32).sqrt()));
        let mut normed = vec![0f32; n * h];
        let mut attn = vec![0f32; n * c.q_dim()];
        let mut projected = vec![0f32; n * h];
        let mut gate = vec![0f32; n * c.ffn];
        let mut up = vec![0f32; n * c.ffn];
        for (l, layer) in self.layers.iter().enumerate() {
            let window = c.windows[l];
            let rotary = if window.is_some() { &local } else { &global };
            ops::rms_norm(&x, &layer.attn_norm, c.eps, &mut normed);
            let projections = Attention {
                q: &layer.q,
                k: &layer.k,
                v: &layer.v,
                q_norm: Some(&layer.q_norm),
                k_norm: Some(&layer.k_norm),
            };
            let mut q = projections.project(c, &normed, rotary, cache, l, pass, isa)?;
            // Queries are scaled before the product, as llama.cpp does.
            q.iter_mut().for_each(|v| *v *= c.attention_scale);
            let (keys, values) = (&cache.keys[l], &cache.values[l]);
            attention(c, &q, keys, values, start, window, 1.0, &mut attn);
            layer
                .o
                .forward(&Input::new(&attn), &mut projected, false, pass, isa)?;
            ops::rms_norm_in_place(&mut projected, &layer.post_attention_norm, c.eps);
            ops::add(&projected, &mut x);

            ops::rms_norm(&x, &layer.ffn_norm, c.eps, &mut normed);
            let input = Input::new(&normed);
            Linear::forward_many(
                &mut [(&layer.gate, &mut gate, false), (&layer.up, &mut up, false)],
                &input,
                pass,
                isa,
            )?;
            ops::par_geglu(&mut gate, &up);
            layer
                .down
                .forward(&Input::new(&gate), &mut projected, false, pass, isa)?;
            ops::rms_norm_in_place(&mut projected, &layer.post_ffn_norm, c.eps);
            ops::add(&projected, &mut x);
        }
        logits(c, &x, &self.output_norm, &self.output, isa)
    }
}
