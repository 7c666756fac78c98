//! The pieces every architecture is built from: [`Linear`] weight matrices
//! (packed for the integer kernels of [`kb_kernels`], or f32), their
//! [`Input`] quantized once for all the matrices that read it, the
//! key/value [`Cache`], causal [`attention`] and the embedding table.

use std::cell::OnceCell;
use std::sync::Arc;

use kb_kernels::dense::{self, DisjointWrites};
use kb_kernels::{Activations, Format, Isa, PackedMatrix, Scheme};
use rayon::prelude::*;

use super::config::Config;
use crate::error::{LlmError, Result};
use crate::gguf::GgufFile;
use crate::ops;

/// Which path a batch of tokens takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Prompt tokens: f32 products where the reference copies are held.
    Prompt,
    /// A generated token.
    Decode,
}

/// How weights are held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holding {
    /// The kernel family products run on.
    pub(crate) isa: Isa,
    /// Keep f32 copies of the layer matrices for prompts (the reference
    /// arithmetic).
    pub(crate) dense: bool,
}

/// The ggml type of a tensor as the kernels name it.
fn format_of(dtype: candle_core::quantized::GgmlDType) -> Option<Format> {
    use candle_core::quantized::GgmlDType as G;
    Some(match dtype {
        G::Q4_0 => Format::Q4_0,
        G::Q4_1 => Format::Q4_1,
        G::Q5_0 => Format::Q5_0,
        G::Q5_1 => Format::Q5_1,
        G::Q8_0 => Format::Q8_0,
        G::Q2K => Format::Q2_K,
        G::Q3K => Format::Q3_K,
        G::Q4K => Format::Q4_K,
        G::Q5K => Format::Q5_K,
        G::Q6K => Format::Q6_K,
        _ => return None,
    })
}

/// A `rows × cols` matrix as stored, packed for the kernels when its type
/// has one, else (F32, F16, BF16) as f32.
#[derive(Debug)]
pub(crate) enum Matrix {
    Packed(PackedMatrix),
    Dense(Vec<f32>),
}

impl Matrix {
    /// Reads tensor `name`, checking that it is `rows × cols`. Quantized
    /// tensors are packed as they are read, a slice at a time.
    pub(crate) fn load(gguf: &mut GgufFile, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let (place, mut reader) = gguf.stream(name)?;
        let numel: usize = place.dims.iter().product();
        if numel != rows * cols || place.dims.first() != Some(&rows) {
            return Err(LlmError::tensor(
                name,
                format!("expected shape [{rows}, {cols}], found {:?}", place.dims),
            ));
        }
        if let Some(format) = format_of(place.dtype) {
            if PackedMatrix::ggml_size(format, rows, cols)? != place.bytes {
                return Err(LlmError::tensor(name, "its size does not match its type"));
            }
            return Ok(Matrix::Packed(PackedMatrix::read_ggml(
                format,
                rows,
                cols,
                &mut reader,
            )?));
        }
        drop(reader);
        Ok(Matrix::Dense(gguf.f32_tensor(name)?))
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        match self {
            Matrix::Packed(p) => p.size(),
            Matrix::Dense(d) => d.len() * 4,
        }
    }

    /// Row `row` (of `cols` values) as f32.
    pub(crate) fn row(&self, row: usize, cols: usize, out: &mut [f32]) {
        match self {
            Matrix::Packed(p) => p.dequantize_row(row, out),
            Matrix::Dense(d) => out.copy_from_slice(&d[row * cols..(row + 1) * cols]),
        }
    }
}

/// A weight matrix `rows × cols` with its bias, and the f32 copy prompts
/// take in the reference mode.
pub(crate) struct Linear {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    weights: Arc<Matrix>,
    /// f32 weights for prompts (reference mode), where the matrix is packed.
    reference: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Loads `name` (and `name`'s bias, where the file has one).
    pub(crate) fn load(
        gguf: &mut GgufFile,
        name: &str,
        rows: usize,
        cols: usize,
        holding: Holding,
    ) -> Result<Self> {
        let weights = Arc::new(Matrix::load(gguf, name, rows, cols)?);
        let reference = match &*weights {
            Matrix::Packed(_) if holding.dense => Some(gguf.f32_tensor(name)?),
            _ => None,
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
            weights,
            reference,
            bias,
        })
    }

    /// A matrix shared with another use (tied embeddings), without copies.
    pub(crate) fn shared(weights: Arc<Matrix>, rows: usize, cols: usize) -> Self {
        Linear {
            rows,
            cols,
            weights,
            reference: None,
            bias: None,
        }
    }

    /// Bytes held (a shared matrix counts where it was loaded).
    pub(crate) fn size(&self) -> usize {
        let own = if Arc::strong_count(&self.weights) == 1 {
            self.weights.size()
        } else {
            0
        };
        own + self.reference.as_ref().map_or(0, |d| d.len() * 4)
    }

    /// `out (n × rows) = input (n × cols) · Wᵀ + b`, or added to `out`.
    pub(crate) fn forward(
        &self,
        input: &Input<'_>,
        out: &mut [f32],
        accumulate: bool,
        pass: Pass,
        isa: Isa,
    ) -> Result<()> {
        Linear::forward_many(&mut [(self, out, accumulate)], input, pass, isa)
    }

    /// Several matrices applied to the same input (`(matrix, output,
    /// accumulate)` each), the packed ones in one parallel pass.
    pub(crate) fn forward_many(
        jobs: &mut [(&Linear, &mut [f32], bool)],
        input: &Input<'_>,
        pass: Pass,
        isa: Isa,
    ) -> Result<()> {
        let mut products = Vec::with_capacity(jobs.len());
        for (linear, out, accumulate) in jobs.iter_mut() {
            let n = input.values.len() / linear.cols;
            match (&*linear.weights, &linear.reference) {
                (_, Some(reference)) if pass == Pass::Prompt => {
                    let (rows, cols) = (linear.rows, linear.cols);
                    // Large products spread over the threads.
                    let parallel = n * rows * cols >= 1 << 18;
                    dense::matmul(
                        input.values,
                        n,
                        cols,
                        reference,
                        rows,
                        out,
                        *accumulate,
                        parallel,
                    );
                }
                (Matrix::Packed(packed), _) => {
                    let x = input.quantized(packed.format().scheme(), linear.cols, isa)?;
                    products.push(kb_kernels::Product {
                        w: packed,
                        x,
                        out,
                        add: *accumulate,
                    });
                }
                (Matrix::Dense(dense), _) => {
                    let (rows, cols) = (linear.rows, linear.cols);
                    ops::matmul_exact(input.values, n, cols, dense, rows, out, *accumulate);
                }
            }
        }
        kb_kernels::multiply_many(isa, &mut products)?;
        drop(products);
        for (linear, out, _) in jobs.iter_mut() {
            if let Some(bias) = &linear.bias {
                for row in out.chunks_exact_mut(linear.rows) {
                    ops::axpy(1.0, bias, row);
                }
            }
        }
        Ok(())
    }
}

/// The rows one or more matrices read, quantized for the kernels once per
/// scheme, when the first matrix that needs it asks.
pub(crate) struct Input<'a> {
    pub(crate) values: &'a [f32],
    q8_0: OnceCell<Activations>,
    q8_k: OnceCell<Activations>,
}

impl<'a> Input<'a> {
    pub(crate) fn new(values: &'a [f32]) -> Self {
        Input {
            values,
            q8_0: OnceCell::new(),
            q8_k: OnceCell::new(),
        }
    }

    fn quantized(&self, scheme: Scheme, cols: usize, isa: Isa) -> Result<&Activations> {
        let cell = match scheme {
            Scheme::Q8_0 => &self.q8_0,
            Scheme::Q8_K => &self.q8_k,
        };
        if let Some(x) = cell.get() {
            return Ok(x);
        }
        let mut x = Activations::new(scheme);
        x.quantize(self.values, cols, isa)?;
        Ok(cell.get_or_init(|| x))
    }
}

/// The key/value cache of one sequence: per layer, the keys and values of
/// every position so far (`positions × kv_dim`).
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    pub(crate) keys: Vec<Vec<f32>>,
    pub(crate) values: Vec<Vec<f32>>,
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

    /// Bytes the keys and values held take.
    pub(crate) fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Makes room for `positions` in all, so that growing to them moves
    /// nothing (a growing vector would otherwise double and copy itself,
    /// holding both copies for a moment and leaving the old one to the
    /// allocator).
    pub(crate) fn reserve(&mut self, positions: usize) {
        let want = positions * self.kv_dim;
        for v in self.keys.iter_mut().chain(&mut self.values) {
            if v.capacity() < want {
                v.reserve_exact(want - v.len());
            }
        }
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

/// Causal attention of the `n` query rows in `q` (at positions
/// `start..start + n`) over the cached keys and values, each query seeing
/// the last `window` positions (all when `None`), scores times `scale`.
///
/// Prompt rows are taken in blocks per head; every row gets exactly the
/// arithmetic of the decoding path whatever the block, so results never
/// depend on how a prompt was split between the cache and a new request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    config: &Config,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    window: Option<usize>,
    scale: f32,
    out: &mut [f32],
) {
    let (hd, heads, kvd, qd) = (
        config.head_dim,
        config.heads,
        config.kv_dim(),
        config.q_dim(),
    );
    let group = config.heads / config.kv_heads;
    let n = q.len() / qd;
    // The first key position row `t` sees.
    let first_key = |t: usize| window.map_or(0, |w| (start + t + 1).saturating_sub(w));
    if n == 1 {
        out.par_chunks_mut(hd).enumerate().for_each_init(
            Vec::new,
            |scores: &mut Vec<f32>, (head, o)| {
                let kv_head = head / group;
                let query = &q[head * hd..(head + 1) * hd];
                let (lo, len) = (first_key(0), start + 1);
                scores.clear();
                scores.resize(len - lo, 0.0);
                let keys = &keys[lo * kvd..];
                ops::attention_scores(query, keys, kvd, kv_head * hd, scale, scores);
                ops::softmax(scores);
                ops::weighted_sum(scores, &values[lo * kvd..], kvd, kv_head * hd, o);
            },
        );
        return;
    }
    const ROWS: usize = 32;
    let blocks = n.div_ceil(ROWS);
    let shared = DisjointWrites::new(out);
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
                for j in first_key(first + r0)..start + first + r0 + in_group {
                    let key = &keys[j * kvd + kv_head * hd..j * kvd + (kv_head + 1) * hd];
                    let d = ops::dot8(at, key);
                    for (i, v) in d.iter().take(in_group).enumerate() {
                        scores[(r0 + i) * len + j] = v * scale;
                    }
                }
            }
            for r in 0..rows {
                let (lo, valid) = (first_key(first + r), start + first + r + 1);
                let row = &mut scores[r * len + lo..r * len + valid];
                ops::softmax(row);
                // SAFETY: each task writes only the `hd` values of its own
                // head in its own rows; tasks never overlap.
                let o = unsafe { shared.slice((first + r) * qd + head * hd, hd) };
                ops::weighted_sum(row, &values[lo * kvd..], kvd, kv_head * hd, o);
            }
        },
    );
}

/// Bytes held by the layers' matrices, the embedding table and the output
/// layer (which may share the table's weights).
pub(crate) fn weights_size<'a, const N: usize>(
    layers: impl Iterator<Item = [&'a Linear; N]>,
    embeddings: &Matrix,
    output: &Linear,
) -> usize {
    let layers: usize = layers
        .map(|matrices| matrices.iter().map(|m| m.size()).sum::<usize>())
        .sum();
    layers + embeddings.size() + output.size()
}

/// Reads an f32 vector of `len` values.
pub(crate) fn vector(gguf: &mut GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = gguf.f32_tensor(name)?;
    if v.len() != len {
        return Err(LlmError::tensor(
            name,
            format!("expected {len} values, found {}", v.len()),
        ));
    }
    Ok(v)
}

/// Reads an f32 vector of `len` values, if the file has it.
pub(crate) fn optional_vector(
    gguf: &mut GgufFile,
    name: &str,
    len: usize,
) -> Result<Option<Vec<f32>>> {
    if gguf.has_tensor(name) {
        vector(gguf, name, len).map(Some)
    } else {
        Ok(None)
    }
}

/// The token embedding table, and the output projection (its own, or the
/// table itself when the file ties them).
pub(crate) fn embeddings(
    gguf: &mut GgufFile,
    config: &Config,
    holding: Holding,
) -> Result<(Arc<Matrix>, Linear)> {
    let (vocab, h) = (config.vocab, config.hidden);
    let table = Arc::new(Matrix::load(gguf, "token_embd.weight", vocab, h)?);
    let output = if gguf.has_tensor("output.weight") {
        Linear::load(
            gguf,
            "output.weight",
            vocab,
            h,
            Holding {
                dense: false,
                ..holding
            },
        )?
    } else {
        Linear::shared(Arc::clone(&table), vocab, h)
    };
    Ok((table, output))
}

/// The embedding rows of `tokens`, each times `scale` when given.
pub(crate) fn embed(table: &Matrix, tokens: &[u32], width: usize, scale: Option<f32>) -> Vec<f32> {
    let mut x = vec![0f32; tokens.len() * width];
    for (row, &t) in x.chunks_exact_mut(width).zip(tokens) {
        table.row(t as usize, width, row);
        if let Some(scale) = scale {
            row.iter_mut().for_each(|v| *v *= scale);
        }
    }
    x
}

/// The logits after the last row of `x`: final norm, output projection.
pub(crate) fn logits(
    config: &Config,
    x: &[f32],
    norm: &[f32],
    output: &Linear,
    isa: Isa,
) -> Result<Vec<f32>> {
    let h = config.hidden;
    let last = &x[x.len() - h..];
    let mut normed = vec![0f32; h];
    ops::rms_norm(last, norm, config.eps, &mut normed);
    let mut logits = vec![0f32; config.vocab];
    output.forward(&Input::new(&normed), &mut logits, false, Pass::Decode, isa)?;
    Ok(logits)
}

/// The attention block's projections and cache update shared by every
/// architecture: `q`, `k`, `v` from `normed`, the optional per-head norms,
/// rotary embeddings at positions `start..`; keys and values appended to
/// layer `l` of `cache`.
pub(crate) struct Attention<'a> {
    pub(crate) q: &'a Linear,
    pub(crate) k: &'a Linear,
    pub(crate) v: &'a Linear,
    pub(crate) q_norm: Option<&'a [f32]>,
    pub(crate) k_norm: Option<&'a [f32]>,
}

impl Attention<'_> {
    /// Returns the rotated queries.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn project(
        &self,
        config: &Config,
        normed: &[f32],
        rotary: &ops::Rotary,
        cache: &mut Cache,
        l: usize,
        pass: Pass,
        isa: Isa,
    ) -> Result<Vec<f32>> {
        let n = normed.len() / config.hidden;
        let (qd, kvd) = (config.q_dim(), config.kv_dim());
        let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
        let input = Input::new(normed);
        Linear::forward_many(
            &mut [
                (self.q, &mut q, false),
                (self.k, &mut k, false),
                (self.v, &mut v, false),
            ],
            &input,
            pass,
            isa,
        )?;
        if let Some(norm) = self.q_norm {
            ops::rms_norm_in_place(&mut q, norm, config.eps);
        }
        if let Some(norm) = self.k_norm {
            ops::rms_norm_in_place(&mut k, norm, config.eps);
        }
        for t in 0..n {
            rotary.apply(
                &mut q[t * qd..(t + 1) * qd],
                t,
                config.head_dim,
                config.neox,
            );
            rotary.apply(
                &mut k[t * kvd..(t + 1) * kvd],
                t,
                config.head_dim,
                config.neox,
            );
        }
        cache.keys[l].extend_from_slice(&k);
        cache.values[l].extend_from_slice(&v);
        Ok(q)
    }
}
