//! The Llama architecture and its relatives (Mistral, Qwen 2 with its
//! attention biases, Qwen 3 with its query/key norms), on the CPU.
//!
//! Prompt processing is compute-bound. Where the processor has AVX-512 VNNI,
//! prompt tokens go through [`kb_core::quant`]'s integer product, the
//! activations rounded to 8 bits as decoding does; otherwise, or with f32
//! copies of the weights held, through an f32 GEMM (the reference
//! arithmetic: it gives llama.cpp's greedy tokens exactly), the weights
//! dequantized per product when no copies are held. Generated tokens go
//! through the quantized kernels of [`crate::quant`] (decoding is bound by
//! reading the weights, and the quantized rows are 4–7× smaller). The rule is
//! fixed by the kind of token, never by batch size, so a prompt prefix served
//! from the cache gives the same numbers as one computed again.

use std::cell::OnceCell;

use rayon::prelude::*;

use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;
use crate::ops::{self, Rotary};
use kb_core::quant::{self, Q4Tiles, Q8Rows};

use crate::quant::{BLOCK, QuantRows, QuantizedActs, QuantizedBatch};

/// The architectures this file runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub(crate) struct Config {
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
    /// Qwen's rotary layout (dimension `i` paired with `i + d/2`).
    pub(crate) neox: bool,
}

impl Config {
    /// Checks that this file can run `gguf`'s architecture.
    pub(crate) fn check_architecture(gguf: &GgufFile) -> Result<()> {
        Self::arch(gguf).map(|_| ())
    }

    fn arch(gguf: &GgufFile) -> Result<Arch> {
        let name = gguf.architecture()?;
        match name {
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            _ => Err(LlmError::UnsupportedArchitecture {
                architecture: name.to_string(),
            }),
        }
    }

    pub(crate) fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = Self::arch(gguf)?;
        let name = gguf.architecture()?.to_string();
        let key = |k: &str| format!("{name}.{k}");
        let hidden = gguf.usize(&key("embedding_length"))?;
        let heads = gguf.usize(&key("attention.head_count"))?;
        let kv_heads = if gguf.has(&key("attention.head_count_kv")) {
            gguf.usize(&key("attention.head_count_kv"))?
        } else {
            heads
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(LlmError::metadata(
                &key("attention.head_count_kv"),
                format!("{heads} heads cannot share {kv_heads} key/value heads"),
            ));
        }
        let head_dim = if gguf.has(&key("attention.key_length")) {
            gguf.usize(&key("attention.key_length"))?
        } else {
            hidden / heads
        };
        let rope_dims = if gguf.has(&key("rope.dimension_count")) {
            gguf.usize(&key("rope.dimension_count"))?
        } else {
            head_dim
        };
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(LlmError::metadata(
                &key("rope.dimension_count"),
                format!("{rope_dims} does not fit heads of {head_dim}"),
            ));
        }
        let theta = if gguf.has(&key("rope.freq_base")) {
            gguf.f32(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        let freqs = (0..rope_dims / 2)
            .map(|i| theta.powf(-2.0 * i as f32 / rope_dims as f32))
            .collect();
        let eps = gguf.f32(&key("attention.layer_norm_rms_epsilon"))?;
        let vocab = gguf.dims("token_embd.weight")?[0];
        Ok(Config {
            vocab,
            hidden,
            layers: gguf.usize(&key("block_count"))?,
            heads,
            kv_heads,
            head_dim,
            ffn: gguf.usize(&key("feed_forward_length"))?,
            eps,
            context: gguf.usize(&key("context_length"))?,
            freqs,
            neox: arch != Arch::Llama,
        })
    }

    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A weight matrix `rows × cols`: quantized rows for decoding and an f32 copy
/// for prompts, whichever the file and the memory mode allow.
struct Linear {
    rows: usize,
    cols: usize,
    dense: Option<Vec<f32>>,
    quant: Option<QuantRows>,
    /// The quantized rows repacked for the batched integer kernel, where the
    /// processor and the block type have one.
    tiles: Option<Q4Tiles>,
    bias: Option<Vec<f32>>,
}

/// Which path a batch of tokens takes through the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Prompt tokens: f32 matrix products when the f32 weights are held.
    Prompt,
    /// A generated token: quantized kernels when the file's type has them.
    Decode,
}

impl Linear {
    fn load(
        gguf: &mut GgufFile,
        name: &str,
        rows: usize,
        cols: usize,
        dense: bool,
        tiled: bool,
    ) -> Result<Self> {
        let raw = gguf.raw(name)?;
        let numel: usize = raw.dims.iter().product();
        if numel != rows * cols || raw.dims.first() != Some(&rows) {
            return Err(LlmError::tensor(
                name,
                format!("expected shape [{rows}, {cols}], found {:?}", raw.dims),
            ));
        }
        let quant = if cols.is_multiple_of(BLOCK) {
            QuantRows::from_ggml(raw.dtype, &raw.bytes)
        } else {
            None
        };
        drop(raw);
        // Prompts take the f32 copies when they are held.
        let tiles = match &quant {
            Some(quant) if tiled && !dense => quant.tiles(rows, cols),
            _ => None,
        };
        let dense = if dense || quant.is_none() {
            Some(gguf.f32_tensor(name)?)
        } else {
            None
        };
        let bias_name = name.replace(".weight", ".bias");
        let bias = if gguf.has_tensor(&bias_name) {
            let b = gguf.f32_tensor(&bias_name)?;
            if b.len() != rows {
                return Err(LlmError::tensor(
                    &bias_name,
                    format!("expected {rows} values"),
                ));
            }
            Some(b)
        } else {
            None
        };
        Ok(Linear {
            rows,
            cols,
            dense,
            quant,
            tiles,
            bias,
        })
    }

    fn size(&self) -> usize {
        self.dense.as_ref().map_or(0, |d| d.len() * 4)
            + self.quant.as_ref().map_or(0, |q| q.size())
            + self.tiles.as_ref().map_or(0, |t| t.size())
    }

    /// `out (n × rows) = input (n × cols) · Wᵀ + b`, or added to `out`.
    fn forward(
        &self,
        input: &Input<'_>,
        n: usize,
        out: &mut [f32],
        accumulate: bool,
        pass: Pass,
        scratch: &mut QuantizedActs,
    ) {
        if !accumulate {
            out.fill(0.0);
        }
        if let Some(bias) = &self.bias {
            for row in out.chunks_exact_mut(self.rows) {
                ops::axpy(1.0, bias, row);
            }
        }
        match (&self.dense, &self.quant, pass) {
            (None, Some(quant), Pass::Prompt) if self.tiles.is_some() => {
                let x = input.quantized(self.cols);
                if let Some(tiles) = &self.tiles {
                    tiled_matmul(tiles, &x.view(quant), n, self.rows, out);
                }
            }
            (Some(dense), _, Pass::Prompt) | (Some(dense), None, Pass::Decode) => {
                ops::matmul(input.values, n, self.cols, dense, self.rows, out, true);
            }
            (None, Some(quant), Pass::Prompt) => {
                // Dequantized for this product only: the numbers of the f32
                // copies, without holding them.
                let mut dense = vec![0f32; self.rows * self.cols];
                dense
                    .par_chunks_mut(self.cols)
                    .enumerate()
                    .for_each(|(r, row)| quant.dequantize_row(r, self.cols, row));
                ops::matmul(input.values, n, self.cols, &dense, self.rows, out, true);
            }
            (_, Some(quant), _) => {
                let mut part = vec![0f32; self.rows];
                for (x, o) in input
                    .values
                    .chunks_exact(self.cols)
                    .zip(out.chunks_exact_mut(self.rows))
                {
                    scratch.quantize(x);
                    matvec(quant, self.cols, scratch, &mut part);
                    ops::axpy(1.0, &part, o);
                }
            }
            (None, None, _) => unreachable!("a Linear holds at least one copy of its weights"),
        }
    }
}

/// The input of one or more matrices: the rows of `values`, quantized for
/// the integer kernel once, when the first matrix that needs it asks.
struct Input<'a> {
    values: &'a [f32],
    quantized: OnceCell<QuantizedBatch>,
}

impl<'a> Input<'a> {
    fn new(values: &'a [f32]) -> Self {
        Input {
            values,
            quantized: OnceCell::new(),
        }
    }

    fn quantized(&self, cols: usize) -> &QuantizedBatch {
        self.quantized
            .get_or_init(|| QuantizedBatch::new(self.values, cols))
    }
}

/// `out = W · x` over all rows, spread over the thread pool.
fn matvec(w: &QuantRows, cols: usize, x: &QuantizedActs, out: &mut [f32]) {
    let threads = rayon::current_num_threads();
    let chunk = (out.len() / (threads * 4)).clamp(16, 512);
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(c, o)| w.matvec(cols, c * chunk, x, o));
}

/// `out (n × rows) += x (n quantized rows) · Wᵀ` through the integer kernel,
/// the weight rows split over the thread pool. Each output is added up in
/// the same order whatever `n`, so a prompt prefix served from the cache
/// gives the same numbers as one computed again.
fn tiled_matmul(tiles: &Q4Tiles, x: &Q8Rows<'_>, n: usize, rows: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), n * rows);
    let threads = rayon::current_num_threads();
    let chunk = (rows / (threads * 4))
        .next_multiple_of(quant::ROWS)
        .clamp(quant::ROWS, 512);
    let starts: Vec<usize> = (0..rows).step_by(chunk).collect();
    let ptr = SyncPtr(out.as_mut_ptr());
    starts.into_par_iter().for_each(|first| {
        let end = (first + chunk).min(rows);
        let width = end - first;
        let mut part = vec![0f32; n * width];
        quant::multiply_add(x, tiles, 0..n, first..end, &mut part, width);
        for (t, part) in part.chunks_exact(width).enumerate() {
            // SAFETY: this task alone touches columns first..end of each
            // output row, all inside `out` (n × rows).
            let dst =
                unsafe { std::slice::from_raw_parts_mut(ptr.get().add(t * rows + first), width) };
            dst.iter_mut().zip(part).for_each(|(o, v)| *o += v);
        }
    });
}

/// Several matrices applied to the same quantized input in one parallel pass.
fn matvec_many(jobs: &mut [(&Linear, &mut [f32])], x: &QuantizedActs) {
    let threads = rayon::current_num_threads();
    let mut tasks: Vec<(&Linear, usize, &mut [f32])> = Vec::new();
    for (linear, out) in jobs.iter_mut() {
        let chunk = (linear.rows / (threads * 4)).clamp(16, 512);
        for (c, o) in out.chunks_mut(chunk).enumerate() {
            tasks.push((linear, c * chunk, o));
        }
    }
    tasks.into_par_iter().for_each(|(linear, first, out)| {
        if let Some(quant) = &linear.quant {
            quant.matvec(linear.cols, first, x, out);
        }
    });
}

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

/// The key/value cache of one sequence: per layer, the keys and values of
/// every position so far (`positions × kv_dim`).
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
}

impl Cache {
    pub(crate) fn new(config: &Config) -> Self {
        Cache {
            keys: vec![Vec::new(); config.layers],
            values: vec![Vec::new(); config.layers],
            kv_dim: config.kv_dim(),
        }
    }

    /// Positions held.
    pub(crate) fn len(&self) -> usize {
        self.keys.first().map_or(0, |k| k.len() / self.kv_dim)
    }

    /// Keeps the first `len` positions.
    pub(crate) fn truncate(&mut self, len: usize) {
        for (k, v) in self.keys.iter_mut().zip(&mut self.values) {
            k.truncate(len * self.kv_dim);
            v.truncate(len * self.kv_dim);
        }
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 4)
            .sum()
    }
}

/// A loaded model: weights plus the thread pool that runs them.
pub(crate) struct Model {
    pub(crate) config: Config,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Linear,
    pool: rayon::ThreadPool,
    threads: usize,
}

/// The token embedding table, kept in its stored form when it is quantized.
enum Embeddings {
    Quant(QuantRows),
    Dense(Vec<f32>),
}

impl Model {
    /// Loads the weights of `gguf`. With `dense`, f32 copies of the layer
    /// weights are made for fast prompt processing.
    pub(crate) fn load(gguf: &mut GgufFile, threads: usize, dense: bool) -> Result<Self> {
        let config = Config::from_gguf(gguf)?;
        let (h, q, kv, ffn) = (config.hidden, config.q_dim(), config.kv_dim(), config.ffn);
        let vector = |gguf: &mut GgufFile, name: &str, len: usize| -> Result<Vec<f32>> {
            let v = gguf.f32_tensor(name)?;
            if v.len() != len {
                return Err(LlmError::tensor(
                    name,
                    format!("expected {len} values, found {}", v.len()),
                ));
            }
            Ok(v)
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |t: &str| format!("blk.{i}.{t}");
            let norm = |gguf: &mut GgufFile, t: &str, len: usize| -> Result<Option<Vec<f32>>> {
                let n = name(t);
                if gguf.has_tensor(&n) {
                    vector(gguf, &n, len).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: vector(gguf, &name("attn_norm.weight"), h)?,
                q: Linear::load(gguf, &name("attn_q.weight"), q, h, dense, true)?,
                k: Linear::load(gguf, &name("attn_k.weight"), kv, h, dense, true)?,
                v: Linear::load(gguf, &name("attn_v.weight"), kv, h, dense, true)?,
                o: Linear::load(gguf, &name("attn_output.weight"), h, q, dense, true)?,
                q_norm: norm(gguf, "attn_q_norm.weight", config.head_dim)?,
                k_norm: norm(gguf, "attn_k_norm.weight", config.head_dim)?,
                ffn_norm: vector(gguf, &name("ffn_norm.weight"), h)?,
                gate: Linear::load(gguf, &name("ffn_gate.weight"), ffn, h, dense, true)?,
                up: Linear::load(gguf, &name("ffn_up.weight"), ffn, h, dense, true)?,
                down: Linear::load(gguf, &name("ffn_down.weight"), h, ffn, dense, true)?,
            });
        }
        let embedding_raw = gguf.raw("token_embd.weight")?;
        let embeddings = match QuantRows::from_ggml(embedding_raw.dtype, &embedding_raw.bytes) {
            Some(q) if h % BLOCK == 0 => Embeddings::Quant(q),
            _ => Embeddings::Dense(vector(gguf, "token_embd.weight", config.vocab * h)?),
        };
        drop(embedding_raw);
        let output_name = if gguf.has_tensor("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = Linear::load(gguf, output_name, config.vocab, h, false, false)?;
        let output_norm = vector(gguf, "output_norm.weight", h)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kb-llm-{i}"))
            .build()
            .map_err(|e| LlmError::Threads(e.to_string()))?;
        Ok(Model {
            config,
            embeddings,
            layers,
            output_norm,
            output,
            pool,
            threads,
        })
    }

    /// Bytes of weights held.
    pub(crate) fn size(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|m| m.size())
                    .sum::<usize>()
            })
            .sum();
        let embeddings = match &self.embeddings {
            Embeddings::Quant(q) => q.size(),
            Embeddings::Dense(d) => d.len() * 4,
        };
        layers + embeddings + self.output.size()
    }

    /// The threads this model runs on.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model, appends
    /// their keys and values to `cache`, and returns the logits of the last.
    /// The caller has checked the ids, the count and the context window.
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut Cache, pass: Pass) -> Vec<f32> {
        self.pool.install(|| self.run(tokens, cache, pass))
    }

    fn run(&self, tokens: &[u32], cache: &mut Cache, pass: Pass) -> Vec<f32> {
        let c = &self.config;
        let n = tokens.len();
        let (h, qd, kvd) = (c.hidden, c.q_dim(), c.kv_dim());
        let start = cache.len();
        let rotary = Rotary::new(&c.freqs, start, n);
        let mut x = vec![0f32; n * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(tokens) {
            match &self.embeddings {
                Embeddings::Quant(q) => q.dequantize_row(t as usize, h, row),
                Embeddings::Dense(d) => {
                    row.copy_from_slice(&d[t as usize * h..(t as usize + 1) * h]);
                }
            }
        }
        let mut normed = vec![0f32; n * h];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut attn = vec![0f32; n * qd];
        let mut gate = vec![0f32; n * c.ffn];
        let mut up = vec![0f32; n * c.ffn];
        let mut acts = QuantizedActs::default();
        let decode = pass == Pass::Decode && n == 1;
        let pass_kind = if decode { Pass::Decode } else { Pass::Prompt };

        for (l, layer) in self.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.attn_norm, c.eps, &mut normed);
            if decode
                && layer.q.quant.is_some()
                && layer.k.quant.is_some()
                && layer.v.quant.is_some()
            {
                acts.quantize(&normed);
                matvec_many(
                    &mut [(&layer.q, &mut q), (&layer.k, &mut k), (&layer.v, &mut v)],
                    &acts,
                );
                for (lin, out) in [(&layer.q, &mut q), (&layer.k, &mut k), (&layer.v, &mut v)] {
                    if let Some(b) = &lin.bias {
                        ops::axpy(1.0, b, out);
                    }
                }
            } else {
                let input = Input::new(&normed);
                layer.q.forward(&input, n, &mut q, false, pass, &mut acts);
                layer.k.forward(&input, n, &mut k, false, pass, &mut acts);
                layer.v.forward(&input, n, &mut v, false, pass, &mut acts);
            }
            if let Some(norm) = &layer.q_norm {
                ops::rms_norm_in_place(&mut q, norm, c.eps);
            }
            if let Some(norm) = &layer.k_norm {
                ops::rms_norm_in_place(&mut k, norm, c.eps);
            }
            for t in 0..n {
                rotary.apply(&mut q[t * qd..(t + 1) * qd], t, c.head_dim, c.neox);
                rotary.apply(&mut k[t * kvd..(t + 1) * kvd], t, c.head_dim, c.neox);
            }
            cache.keys[l].extend_from_slice(&k);
            cache.values[l].extend_from_slice(&v);
            self.attention(
                &q,
                &cache.keys[l],
                &cache.values[l],
                start,
                pass_kind,
                &mut attn,
            );
            if decode && layer.o.quant.is_some() {
                acts.quantize(&attn);
                matvec_many(&mut [(&layer.o, &mut normed)], &acts);
                ops::axpy(1.0, &normed, &mut x);
            } else {
                layer
                    .o
                    .forward(&Input::new(&attn), n, &mut x, true, pass, &mut acts);
            }

            ops::rms_norm(&x, &layer.ffn_norm, c.eps, &mut normed);
            if decode && layer.gate.quant.is_some() && layer.up.quant.is_some() {
                acts.quantize(&normed);
                matvec_many(&mut [(&layer.gate, &mut gate), (&layer.up, &mut up)], &acts);
            } else {
                let input = Input::new(&normed);
                layer
                    .gate
                    .forward(&input, n, &mut gate, false, pass, &mut acts);
                layer.up.forward(&input, n, &mut up, false, pass, &mut acts);
            }
            gate.par_chunks_mut(4096)
                .zip(up.par_chunks(4096))
                .for_each(|(g, u)| ops::swiglu(g, u));
            if decode && layer.down.quant.is_some() {
                acts.quantize(&gate);
                matvec_many(&mut [(&layer.down, &mut normed)], &acts);
                ops::axpy(1.0, &normed, &mut x);
            } else {
                layer
                    .down
                    .forward(&Input::new(&gate), n, &mut x, true, pass, &mut acts);
            }
        }

        let last = &x[(n - 1) * h..];
        let mut final_norm = vec![0f32; h];
        ops::rms_norm(last, &self.output_norm, c.eps, &mut final_norm);
        let mut logits = vec![0f32; c.vocab];
        match &self.output.quant {
            Some(quant) => {
                acts.quantize(&final_norm);
                matvec(quant, h, &acts, &mut logits);
            }
            None => self.output.forward(
                &Input::new(&final_norm),
                1,
                &mut logits,
                false,
                Pass::Prompt,
                &mut acts,
            ),
        }
        logits
    }

    /// Causal attention of the `n` query rows in `q` (at positions
    /// `start..start + n`) over the cached keys and values.
    fn attention(
        &self,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        start: usize,
        pass: Pass,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (hd, heads, kvd, qd) = (c.head_dim, c.heads, c.kv_dim(), c.q_dim());
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let n = q.len() / qd;
        if pass == Pass::Decode {
            out.par_chunks_mut(hd).enumerate().for_each_init(
                Vec::new,
                |scores: &mut Vec<f32>, (i, o)| {
                    let (t, head) = (i / heads, i % heads);
                    let kv_head = head / group;
                    let query = &q[i * hd..(i + 1) * hd];
                    let len = start + t + 1;
                    scores.clear();
                    scores.resize(len, 0.0);
                    ops::attention_scores(query, keys, kvd, kv_head * hd, scale, scores);
                    ops::softmax(scores);
                    ops::weighted_sum(scores, values, kvd, kv_head * hd, o);
                },
            );
            return;
        }
        // Prompt tokens: blocks of query rows per head, spread over the
        // threads. Every row gets exactly the arithmetic of the decoding path,
        // whatever the block, so results never depend on how a prompt was
        // split between the cache and a new request.
        const ROWS: usize = 32;
        let blocks = n.div_ceil(ROWS);
        let out_ptr = SyncPtr(out.as_mut_ptr());
        (0..heads * blocks).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(scores, transposed): &mut (Vec<f32>, Vec<f32>), task| {
                let (head, block) = (task % heads, task / heads);
                let kv_head = head / group;
                let first = block * ROWS;
                let rows = ROWS.min(n - first);
                let len = start + first + rows;
                scores.clear();
                scores.resize(rows * len, 0.0);
                // The block's queries, transposed for `dot8`, padded with zeros.
                let groups = rows.div_ceil(ops::DOT_ROWS);
                transposed.clear();
                transposed.resize(groups * hd * ops::DOT_ROWS, 0.0);
                for r in 0..rows {
                    let at = (first + r) * qd + head * hd;
                    let (g, lane) = (r / ops::DOT_ROWS, r % ops::DOT_ROWS);
                    for (i, v) in q[at..at + hd].iter().enumerate() {
                        transposed[(g * hd + i) * ops::DOT_ROWS + lane] = *v;
                    }
                }
                for g in 0..groups {
                    let r0 = g * ops::DOT_ROWS;
                    let in_group = (rows - r0).min(ops::DOT_ROWS);
                    let at = &transposed[g * hd * ops::DOT_ROWS..(g + 1) * hd * ops::DOT_ROWS];
                    for j in 0..start + first + r0 + in_group {
                        let key = &keys[j * kvd + kv_head * hd..j * kvd + (kv_head + 1) * hd];
                        let d = ops::dot8(at, key);
                        for (i, v) in d.iter().take(in_group).enumerate() {
                            scores[(r0 + i) * len + j] = v * scale;
                        }
                    }
                }
                for r in 0..rows {
                    let valid = start + first + r + 1;
                    let row = &mut scores[r * len..r * len + valid];
                    ops::softmax(row);
                    // SAFETY: each task writes only the `hd` values of its own
                    // head in its own rows; tasks never overlap.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.get().add((first + r) * qd + head * hd),
                            hd,
                        )
                    };
                    ops::weighted_sum(row, values, kvd, kv_head * hd, o);
                }
            },
        );
    }
}

/// A raw pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);

// SAFETY: the tasks sharing it write disjoint elements (see its uses).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;

    /// Q8_0 blocks from a fixed pattern: a type without tiles, so prompts
    /// take the f32 product on weights dequantized for it.
    fn q8_0_rows(rows: usize, cols: usize) -> QuantRows {
        let mut bytes = Vec::new();
        for i in 0..rows * cols / BLOCK {
            bytes.extend_from_slice(
                &half::f16::from_f32(0.01 + (i % 5) as f32 * 0.003).to_le_bytes(),
            );
            bytes.extend((0..BLOCK).map(|j| ((i * 31 + j * 7) % 200) as u8));
        }
        QuantRows::from_ggml(GgmlDType::Q8_0, &bytes).expect("Q8_0 rows")
    }

    /// Without f32 copies, a prompt's product gives the numbers of the f32
    /// copies exactly.
    #[test]
    fn prompts_without_f32_copies_give_the_dense_numbers() {
        let (rows, cols, n) = (48, 64, 5);
        let quant = q8_0_rows(rows, cols);
        let mut dense = vec![0f32; rows * cols];
        for (r, row) in dense.chunks_exact_mut(cols).enumerate() {
            quant.dequantize_row(r, cols, row);
        }
        let lean = Linear {
            rows,
            cols,
            dense: None,
            tiles: quant.tiles(rows, cols),
            quant: Some(quant),
            bias: None,
        };
        assert!(lean.tiles.is_none());
        let copies = Linear {
            rows,
            cols,
            dense: Some(dense),
            quant: None,
            tiles: None,
            bias: None,
        };
        let input: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let mut acts = QuantizedActs::default();
        let (mut a, mut b) = (vec![0f32; n * rows], vec![0f32; n * rows]);
        let input = Input::new(&input);
        lean.forward(&input, n, &mut a, false, Pass::Prompt, &mut acts);
        copies.forward(&input, n, &mut b, false, Pass::Prompt, &mut acts);
        assert_eq!(a, b);
    }
}
