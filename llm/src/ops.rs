//! The f32 building blocks of a transformer layer beside kb-kernels' matrix
//! products: attention's dot products, RMS norm, rotary embeddings, SwiGLU, softmax.

use kb_kernels::dense::{dot, dot_inlined};
use kb_kernels::math::{self, fast_exp};
use kb_kernels::with_avx2_fma;
use rayon::prelude::*;

/// `scores[j] = dot(query, key j) · scale` for the keys found at `offset`
/// in rows of `stride` values: `dot` per key, bit for bit, with the CPU
/// features checked once for all keys instead of once per key.
pub(crate) fn attention_scores(
    query: &[f32],
    keys: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
    scores: &mut [f32],
) {
    with_avx2_fma!(attention_scores_generic(
        query: &[f32],
        keys: &[f32],
        stride: usize,
        offset: usize,
        scale: f32,
        scores: &mut [f32]
    ))
}

#[inline(always)]
fn attention_scores_generic(
    query: &[f32],
    keys: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let hd = query.len();
    for (j, s) in scores.iter_mut().enumerate() {
        let start = j * stride + offset;
        *s = dot_inlined(query, &keys[start..start + hd]) * scale;
    }
}

/// `out = Σ_j p_j · value j` for the values found at `offset` in rows of
/// `stride` values (each term added in order, as [`axpy`] does).
pub(crate) fn weighted_sum(
    p: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    with_avx2_fma!(weighted_sum_generic(
        p: &[f32],
        values: &[f32],
        stride: usize,
        offset: usize,
        out: &mut [f32]
    ))
}

#[inline(always)]
fn weighted_sum_generic(p: &[f32], values: &[f32], stride: usize, offset: usize, out: &mut [f32]) {
    let hd = out.len();
    out.fill(0.0);
    for (j, &w) in p.iter().enumerate() {
        let start = j * stride + offset;
        for (o, x) in out.iter_mut().zip(&values[start..start + hd]) {
            *o += w * x;
        }
    }
}

/// Rows of queries handled together by [`dot8`].
pub(crate) const DOT_ROWS: usize = 8;

/// [`dot`] of [`DOT_ROWS`] vectors with one `b`, bit-identical to `dot` for
/// each: `at` holds the vectors transposed (`at[i * DOT_ROWS + r]` is element
/// `i` of vector `r`), so each of `dot`'s 16 lanes becomes one SIMD register
/// across the rows, and the final lane sum keeps `dot`'s order.
pub(crate) fn dot8(at: &[f32], b: &[f32]) -> [f32; DOT_ROWS] {
    with_avx2_fma!(dot8_generic(at: &[f32], b: &[f32]) -> [f32; DOT_ROWS])
}

#[inline(always)]
fn dot8_generic(at: &[f32], b: &[f32]) -> [f32; DOT_ROWS] {
    let (b16, b_tail) = b.as_chunks::<16>();
    let (rows, _) = at.as_chunks::<DOT_ROWS>();
    let mut acc = [[0f32; DOT_ROWS]; 16];
    // Lanes 0–7, then 8–15: each half fits in the SIMD registers.
    for half in 0..2 {
        let mut part = [[0f32; DOT_ROWS]; 8];
        for (c, y) in b16.iter().enumerate() {
            let x = &rows[c * 16 + half * 8..c * 16 + half * 8 + 8];
            for l in 0..8 {
                for r in 0..DOT_ROWS {
                    part[l][r] = x[l][r].mul_add(y[half * 8 + l], part[l][r]);
                }
            }
        }
        acc[half * 8..half * 8 + 8].copy_from_slice(&part);
    }
    let mut out = [0f32; DOT_ROWS];
    for lane in &acc {
        for r in 0..DOT_ROWS {
            out[r] += lane[r];
        }
    }
    let mut tail = [0f32; DOT_ROWS];
    for (i, y) in b_tail.iter().enumerate() {
        let x = &rows[b16.len() * 16 + i];
        for r in 0..DOT_ROWS {
            tail[r] = x[r].mul_add(*y, tail[r]);
        }
    }
    for r in 0..DOT_ROWS {
        out[r] += tail[r];
    }
    out
}

/// `out += a · v`, vectorised.
#[inline(always)]
pub(crate) fn axpy(a: f32, v: &[f32], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += a * x;
    }
}

/// RMS norm of each `width`-wide row of `x` into `out`, times `weight`.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, v), w) in dst.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// RMS norm in place.
pub(crate) fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

/// The angles of rotary position embeddings: for each position, `cos` and
/// `sin` of `pos · freq_i` for the `dims / 2` frequencies.
pub(crate) struct Rotary {
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    half: usize,
}

impl Rotary {
    /// The tables for positions `first..first + count`.
    pub(crate) fn new(freqs: &[f32], first: usize, count: usize) -> Self {
        let half = freqs.len();
        let mut cos = Vec::with_capacity(count * half);
        let mut sin = Vec::with_capacity(count * half);
        for p in first..first + count {
            for f in freqs {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Rotary { cos, sin, half }
    }

    /// Rotates the `heads` heads (each `head_dim` wide, of which the first
    /// `2 · half` are rotated) of the row at table position `t`. `neox`
    /// pairs dimension `i` with `i + half`; otherwise pairs are adjacent.
    pub(crate) fn apply(&self, row: &mut [f32], t: usize, head_dim: usize, neox: bool) {
        let cos = &self.cos[t * self.half..(t + 1) * self.half];
        let sin = &self.sin[t * self.half..(t + 1) * self.half];
        for head in row.chunks_exact_mut(head_dim) {
            if neox {
                let (a, b) = head.split_at_mut(self.half);
                for i in 0..self.half {
                    let (x, y) = (a[i], b[i]);
                    a[i] = x * cos[i] - y * sin[i];
                    b[i] = x * sin[i] + y * cos[i];
                }
            } else {
                for i in 0..self.half {
                    let (x, y) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = x * cos[i] - y * sin[i];
                    head[2 * i + 1] = x * sin[i] + y * cos[i];
                }
            }
        }
    }
}

/// Elements below which an element-wise pass runs on the calling thread:
/// waking the pool costs more than it saves (one decoded token's
/// feed-forward, say).
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// [`swiglu`] over the thread pool.
pub(crate) fn par_swiglu(gate: &mut [f32], up: &[f32]) {
    if gate.len() < PARALLEL_ELEMENTS {
        return swiglu(gate, up);
    }
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| swiglu(g, u));
}

/// `gate = gelu(gate) · up` in place, over the thread pool: GELU's tanh
/// approximation looked up for the f16 nearest each value (outside ±10, 0
/// or the value itself), as ggml computes it.
pub(crate) fn par_geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    let geglu = |g: &mut [f32], u: &[f32]| {
        for (g, u) in g.iter_mut().zip(u) {
            let v = *g;
            *g = if v <= -10.0 {
                0.0
            } else if v >= 10.0 {
                v * u
            } else {
                let bits = half::f16::from_f32(v).to_bits();
                half::f16::from_bits(table[bits as usize]).to_f32() * u
            };
        }
    };
    if gate.len() < PARALLEL_ELEMENTS {
        return geglu(gate, up);
    }
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| geglu(g, u));
}

/// GELU (tanh approximation) of every f16, rounded to f16, as bits.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const COEF_A: f32 = 0.044_715;
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                let inner = SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x);
                let y = 0.5 * x * (1.0 + inner.tanh());
                half::f16::from_f32(y).to_bits()
            })
            .collect()
    })
}

/// `x += v`.
pub(crate) fn add(v: &[f32], x: &mut [f32]) {
    for (x, v) in x.iter_mut().zip(v) {
        *x += v;
    }
}

/// `out (n × m) = input (n × k) · weightᵀ`, or added to `out`: each output
/// one [`dot`], so its value does not depend on `n` (for matrices without
/// an integer kernel).
pub(crate) fn matmul_exact(
    input: &[f32],
    n: usize,
    k: usize,
    weight: &[f32],
    m: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(input.len(), n * k, "matmul input shape");
    assert_eq!(weight.len(), m * k, "matmul weight shape");
    assert_eq!(out.len(), n * m, "matmul output shape");
    for (x, out) in input.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        out.par_chunks_mut(64).enumerate().for_each(|(c, o)| {
            for (i, o) in o.iter_mut().enumerate() {
                let row = c * 64 + i;
                let d = dot(x, &weight[row * k..(row + 1) * k]);
                *o = if accumulate { *o + d } else { d };
            }
        });
    }
}

/// `gate = silu(gate) · up`, in place.
pub(crate) fn swiglu(gate: &mut [f32], up: &[f32]) {
    with_avx2_fma!(swiglu_generic(gate: &mut [f32], up: &[f32]))
}

#[inline(always)]
fn swiglu_generic(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + fast_exp(-*g)) * u;
    }
}

/// Softmax in place.
pub(crate) fn softmax(row: &mut [f32]) {
    with_avx2_fma!(softmax_generic(row: &mut [f32]))
}

/// Softmax with the numbers of the plain loop (its sum runs left to right,
/// as llama.cpp's greedy outputs were reproduced with), in passes the
/// compiler vectorises: the maximum in lanes (any order gives the same
/// maximum) and the exponentials apart from the sum, whose one chain of
/// additions would otherwise keep them scalar too.
#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    let max = math::max(row);
    row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
    let sum: f32 = row.iter().fold(0.0, |s, v| s + v);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_scores_are_dot_per_key() {
        let (hd, stride, n) = (64, 192, 37);
        let query: Vec<f32> = (0..hd)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let keys: Vec<f32> = (0..n * stride)
            .map(|i| ((i * 104_729) % 211) as f32 / 100.0 - 1.0)
            .collect();
        let mut scores = vec![0f32; n];
        attention_scores(&query, &keys, stride, 64, 0.125, &mut scores);
        for (j, s) in scores.iter().enumerate() {
            let key = &keys[j * stride + 64..j * stride + 128];
            assert_eq!(s.to_bits(), (dot(&query, key) * 0.125).to_bits());
        }
        let mut out = vec![0f32; hd];
        weighted_sum(&scores, &keys, stride, 64, &mut out);
        let mut expected = vec![0f32; hd];
        for (j, &w) in scores.iter().enumerate() {
            axpy(w, &keys[j * stride + 64..j * stride + 128], &mut expected);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn dot8_is_bit_identical_to_dot() {
        for len in [64, 80, 128, 7] {
            let rows: Vec<Vec<f32>> = (0..DOT_ROWS)
                .map(|r| {
                    (0..len)
                        .map(|i| ((i * 7 + r * 13) % 17) as f32 * 0.37 - 2.9)
                        .collect()
                })
                .collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 11) as f32 * 0.71 - 3.3).collect();
            let mut at = vec![0f32; len * DOT_ROWS];
            for (r, row) in rows.iter().enumerate() {
                for (i, v) in row.iter().enumerate() {
                    at[i * DOT_ROWS + r] = *v;
                }
            }
            let got = dot8(&at, &b);
            for r in 0..DOT_ROWS {
                assert_eq!(
                    got[r].to_bits(),
                    dot(&rows[r], &b).to_bits(),
                    "len {len} row {r}"
                );
            }
        }
    }
}
