//! The Llama architecture and its relatives on the CPU: Llama, Mistral and
//! SmolLM; Qwen 2 (attention biases); Qwen 3 (query/key norms).
//!
//! Pre-norm blocks: `x += o(attention(norm(x)))`, then
//! `x += down(silu(gate(norm(x))) · up(norm(x)))`.

use std::sync::Arc;

use super::config::Config;
use super::layers::{
    Attention, Cache, Holding, Input, Linear, Matrix, Pass, attention, embed, embeddings, logits,
    optional_vector, vector, weights_size,
};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::ops::{self, Rotary};

struct Layer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A Llama-family model's weights.
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
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |t: &str| format!("blk.{i}.{t}");
            let mut linear =
                |t: &str, rows, cols| Linear::load(gguf, &name(t), rows, cols, holding);
            let (wq, wk, wv) = (
                linear("attn_q.weight", q, h)?,
                linear("attn_k.weight", kv, h)?,
                linear("attn_v.weight", kv, h)?,
            );
            let wo = linear("attn_output.weight", h, q)?;
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
                o: wo,
                q_norm: optional_vector(gguf, &name("attn_q_norm.weight"), config.head_dim)?,
                k_norm: optional_vector(gguf, &name("attn_k_norm.weight"), config.head_dim)?,
                ffn_norm: vector(gguf, &name("ffn_norm.weight"), h)?,
                gate,
                up,
                down,
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
        let rotary = Rotary::new(&c.freqs, start, n);
        let mut x = embed(&self.embeddings, tokens, h, None);
        let mut normed = vec![0f32; n * h];
        let mut attn = vec![0f32; n * c.q_dim()];
        let mut gate = vec![0f32; n * c.ffn];
        let mut up = vec![0f32; n * c.ffn];
        for (l, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.attn_norm, c.eps, &mut normed);
            let projections = Attention {
                q: &layer.q,
                k: &layer.k,
                v: &layer.v,
                q_norm: layer.q_norm.as_deref(),
                k_norm: layer.k_norm.as_deref(),
            };
            let q = projections.project(c, &normed, &rotary, cache, l, pass, isa)?;
            let (keys, values) = (&cache.keys[l], &cache.values[l]);
            attention(
                c,
                &q,
                keys,
                values,
                start,
                None,
                c.attention_scale,
                &mut attn,
            );
            layer
                .o
                .forward(&Input::new(&attn), &mut x, true, pass, isa)?;

            ops::rms_norm(&x, &layer.ffn_norm, c.eps, &mut normed);
            let input = Input::new(&normed);
            Linear::forward_many(
                &mut [(&layer.gate, &mut gate, false), (&layer.up, &mut up, false)],
                &input,
                pass,
                isa,
            )?;
            ops::par_swiglu(&mut gate, &up);
            layer
                .down
                .forward(&Input::new(&gate), &mut x, true, pass, isa)?;
        }
        logits(c, &x, &self.output_norm, &self.output, isa)
    }
}
