//! The integer matrix product both local engines use for batches: 4-bit
//! weights times activations quantized to 8 bits, on processors with
//! AVX-512 VNNI.
//!
//! Weights are `w = d·q + m` per block of 32 (`q` in 0..15; ggml's Q4_1, and
//! Q4_0 with `m = −8d`); activations are `x = d·q` per block of 32 (`q` a
//! signed byte), with `s = d·Σq` at hand. A block's product is then
//! `d_w·d_x·Σ q_w·q_x + m_w·s_x`, its sum exact in integers.
//!
//! One `vpdpbusd` multiplies 64 pairs of bytes and adds them, four by four,
//! into 16 integer sums: four times the multiply-adds of an f32 FMA of the
//! same width. For one instruction to serve 16 weight rows, [`Q4Tiles`]
//! repacks the weights at load into tiles of 16 rows in which each 64-byte
//! line holds four consecutive columns of every row (row `r`'s in bytes
//! `4r..4r + 4`); four activation bytes broadcast to all 16 lanes then meet
//! the right weights. Each output's blocks are added in column order
//! whatever the batch, so a token's result does not depend on the tokens
//! beside it.
//!
//! ```
//! use kb_core::quant::{BLOCK, Q4Tiles, Q8Rows, multiply_add};
//!
//! // 32 weight rows of 32 columns, every weight 2·1 − 1 = 1.
//! let blocks = (0..32).map(|_| (2.0, -1.0, [0x11u8; BLOCK / 2]));
//! let Some(weights) = Q4Tiles::new(32, BLOCK, blocks) else {
//!     return; // no AVX-512 VNNI here
//! };
//! // One token: 32 values of 0.5, quantized as 127 · (0.5 / 127).
//! let d = 0.5 / 127.0;
//! let x = Q8Rows {
//!     k: BLOCK,
//!     values: &[127; BLOCK],
//!     scales: &[d],
//!     sums: &[d * 127.0 * 32.0],
//! };
//! let mut out = vec![0.0; 32];
//! multiply_add(&x, &weights, 0..1, 0..32, &mut out, 32);
//! assert!(out.iter().all(|&v| (v - 16.0).abs() < 1e-4));
//! ```

use std::ops::Range;

/// Values per quantization block.
pub const BLOCK: usize = 32;
/// Weight rows per tile: the 32-bit lanes of one 512-bit register.
const TILE: usize = 16;
/// Rows the kernel takes at once: two tiles.
pub const ROWS: usize = 2 * TILE;
/// Bytes of one tile's block: 16 rows × 32 columns.
const TILE_BLOCK: usize = TILE * BLOCK;
/// Activation rows per call of the micro-kernel.
const TOKENS: usize = 6;

/// 4-bit weights, `rows × k`, repacked for [`multiply_add`].
#[derive(Debug, Clone)]
pub struct Q4Tiles {
    rows: usize,
    k: usize,
    /// `rows/16` tiles × `k/32` blocks × 8 groups of 4 columns × 16 rows ×
    /// 4 quants, each 0..15 in a byte.
    quants: Vec<u8>,
    /// `rows/16` tiles × `k/32` blocks × 16 rows: the blocks' scales `d`.
    scales: Vec<f32>,
    /// Laid out as `scales`: the blocks' offsets `m`.
    mins: Vec<f32>,
}

impl Q4Tiles {
    /// Repacks `rows × k` weights given block by block, row after row, as
    /// `(d, m, qs)` in ggml's packing: byte `i` of `qs` holds column `i`'s
    /// `q` in its low nibble and column `i + 16`'s in its high one (the
    /// weight is `d·q + m`).
    /// `None` when this processor has no AVX-512 VNNI, when `rows` or `k` is
    /// not a multiple of 32, or when the blocks are too few.
    pub fn new(
        rows: usize,
        k: usize,
        blocks: impl IntoIterator<Item = (f32, f32, [u8; BLOCK / 2])>,
    ) -> Option<Self> {
        if !supported() || !rows.is_multiple_of(ROWS) || !k.is_multiple_of(BLOCK) || k == 0 {
            return None;
        }
        let per_row = k / BLOCK;
        let mut quants = vec![0u8; rows * k];
        let mut scales = vec![0f32; rows * per_row];
        let mut mins = vec![0f32; rows * per_row];
        let mut count = 0;
        for (i, (d, m, qs)) in blocks.into_iter().take(rows * per_row).enumerate() {
            let (r, b) = (i / per_row, i % per_row);
            let (tile, lane) = (r / TILE, r % TILE);
            let at = tile * per_row + b;
            scales[at * TILE + lane] = d;
            mins[at * TILE + lane] = m;
            let dst = &mut quants[at * TILE_BLOCK..(at + 1) * TILE_BLOCK];
            for (i, &byte) in qs.iter().enumerate() {
                for (column, value) in [(i, byte & 0x0f), (i + BLOCK / 2, byte >> 4)] {
                    dst[(column / 4) * 4 * TILE + lane * 4 + column % 4] = value;
                }
            }
            count += 1;
        }
        (count == rows * per_row).then_some(Q4Tiles {
            rows,
            k,
            quants,
            scales,
            mins,
        })
    }

    /// The number of weight rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.mins.len())
    }
}

/// Rows of activations quantized per block of 32: row `t`'s values are
/// `values[t·k..(t + 1)·k]`, its block `b`'s scale `scales[t·k/32 + b]` and
/// that block's `d·Σq` `sums[t·k/32 + b]`.
#[derive(Debug, Clone, Copy)]
pub struct Q8Rows<'a> {
    /// Values per row, a multiple of 32.
    pub k: usize,
    /// The quantized values.
    pub values: &'a [i8],
    /// Each block's scale.
    pub scales: &'a [f32],
    /// Each block's scale times the sum of its values.
    pub sums: &'a [f32],
}

/// Whether this processor runs [`multiply_add`].
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Adds `x[t] · w[r]` to `out[(t − tokens.start)·stride + (r − rows.start)]`
/// for every activation row `t` in `tokens` and weight row `r` in `rows`.
/// `rows` must start and end on multiples of [`ROWS`].
///
/// # Panics
/// When the ranges fall outside `x`, `w` or `out`, or `rows` is not aligned.
pub fn multiply_add(
    x: &Q8Rows<'_>,
    w: &Q4Tiles,
    tokens: Range<usize>,
    rows: Range<usize>,
    out: &mut [f32],
    stride: usize,
) {
    let blocks = w.k / BLOCK;
    assert_eq!(x.k, w.k, "the activations' width is not the weights'");
    assert!(
        x.values.len() >= tokens.end * x.k,
        "too few activation rows"
    );
    assert!(x.scales.len() >= tokens.end * blocks && x.sums.len() >= tokens.end * blocks);
    assert!(rows.start.is_multiple_of(ROWS) && rows.end.is_multiple_of(ROWS));
    assert!(
        rows.start <= rows.end && rows.end <= w.rows,
        "rows outside the weights"
    );
    assert!(stride >= rows.len(), "the stride is narrower than the rows");
    if tokens.is_empty() || rows.is_empty() {
        return;
    }
    assert!(out.len() >= (tokens.len() - 1) * stride + rows.len());
    #[cfg(target_arch = "x86_64")]
    {
        let product = Product {
            x,
            w,
            tokens,
            rows,
            stride,
        };
        // SAFETY: a `Q4Tiles` exists only where the processor has the
        // features the kernel is compiled for.
        unsafe { kernel::run(&product, out) }
    }
}

/// The arguments of [`multiply_add`] but its output, checked.
#[cfg(target_arch = "x86_64")]
struct Product<'a> {
    x: &'a Q8Rows<'a>,
    w: &'a Q4Tiles,
    tokens: Range<usize>,
    rows: Range<usize>,
    stride: usize,
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{BLOCK, Product, Q4Tiles, Q8Rows, ROWS, TILE, TILE_BLOCK, TOKENS};
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// [`super::multiply_add`] after its checks.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) fn run(product: &Product<'_>, out: &mut [f32]) {
        let Product {
            x,
            w,
            ref tokens,
            ref rows,
            stride,
        } = *product;
        for pair in rows.start / ROWS..rows.end / ROWS {
            let column = pair * ROWS - rows.start;
            let mut t = tokens.start;
            while t < tokens.end {
                let len = (tokens.end - t).min(TOKENS);
                let tile = Tile {
                    x,
                    w,
                    first: t,
                    pair,
                };
                let out = &mut out[(t - tokens.start) * stride + column..];
                match len {
                    1 => tile.multiply_add::<1>(out, stride),
                    2 => tile.multiply_add::<2>(out, stride),
                    3 => tile.multiply_add::<3>(out, stride),
                    4 => tile.multiply_add::<4>(out, stride),
                    5 => tile.multiply_add::<5>(out, stride),
                    _ => tile.multiply_add::<6>(out, stride),
                }
                t += len;
            }
        }
    }

    /// A few activation rows against two weight tiles (32 rows).
    struct Tile<'a> {
        x: &'a Q8Rows<'a>,
        w: &'a Q4Tiles,
        first: usize,
        pair: usize,
    }

    impl Tile<'_> {
        /// `out[r·stride + c] += x[first + r] · w[32·pair + c]` for `r < R`,
        /// `c < 32`. Per block of 32 columns: 8 steps of four columns, each
        /// a broadcast of four activation bytes per row and two `vpdpbusd`;
        /// then the integer sums are scaled and added in f32 with the
        /// offsets' share.
        #[target_feature(enable = "avx512f,avx512vnni")]
        fn multiply_add<const R: usize>(&self, out: &mut [f32], stride: usize) {
            let (x, w) = (self.x, self.w);
            let blocks = w.k / BLOCK;
            let tile0 = 2 * self.pair * blocks;
            let tile1 = tile0 + blocks;
            let rows = self.first * x.k..(self.first + R) * x.k;
            let values = &x.values[rows];
            assert_eq!(values.len(), R * x.k);
            let meta = self.first * blocks..(self.first + R) * blocks;
            let (scales, sums) = (&x.scales[meta.clone()], &x.sums[meta]);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for b in 0..blocks {
                let mut dots: [[__m512i; 2]; R] = [[_mm512_set1_epi32(0); 2]; R];
                let q0 = &w.quants[(tile0 + b) * TILE_BLOCK..(tile0 + b + 1) * TILE_BLOCK];
                let q1 = &w.quants[(tile1 + b) * TILE_BLOCK..(tile1 + b + 1) * TILE_BLOCK];
                for g in 0..BLOCK / 4 {
                    // SAFETY: each slice holds 8 lines of 64 bytes.
                    let (w0, w1) = unsafe {
                        (
                            _mm512_loadu_si512(q0.as_ptr().add(g * 64).cast()),
                            _mm512_loadu_si512(q1.as_ptr().add(g * 64).cast()),
                        )
                    };
                    for (r, dot) in dots.iter_mut().enumerate() {
                        // SAFETY: row r's block b lies inside `values`
                        // (R rows of k values), checked once above.
                        let four = unsafe {
                            values
                                .as_ptr()
                                .add(r * x.k + b * BLOCK + g * 4)
                                .cast::<i32>()
                                .read_unaligned()
                        };
                        let a = _mm512_set1_epi32(four);
                        dot[0] = _mm512_dpbusd_epi32(dot[0], w0, a);
                        dot[1] = _mm512_dpbusd_epi32(dot[1], w1, a);
                    }
                }
                let at0 = (tile0 + b) * TILE;
                let at1 = (tile1 + b) * TILE;
                let (d0, d1) = (
                    load(&w.scales[at0..at0 + TILE]),
                    load(&w.scales[at1..at1 + TILE]),
                );
                let (m0, m1) = (
                    load(&w.mins[at0..at0 + TILE]),
                    load(&w.mins[at1..at1 + TILE]),
                );
                for (r, (acc, dot)) in acc.iter_mut().zip(&dots).enumerate() {
                    let dx = _mm512_set1_ps(scales[r * blocks + b]);
                    let sx = _mm512_set1_ps(sums[r * blocks + b]);
                    let scaled0 = _mm512_mul_ps(_mm512_cvtepi32_ps(dot[0]), dx);
                    let scaled1 = _mm512_mul_ps(_mm512_cvtepi32_ps(dot[1]), dx);
                    acc[0] = _mm512_fmadd_ps(m0, sx, _mm512_fmadd_ps(scaled0, d0, acc[0]));
                    acc[1] = _mm512_fmadd_ps(m1, sx, _mm512_fmadd_ps(scaled1, d1, acc[1]));
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (half, acc) in acc.iter().enumerate() {
                    let at = r * stride + half * TILE;
                    let dst = &mut out[at..at + TILE];
                    // SAFETY: `dst` holds 16 floats.
                    unsafe {
                        let sum = _mm512_add_ps(_mm512_loadu_ps(dst.as_ptr()), *acc);
                        _mm512_storeu_ps(dst.as_mut_ptr(), sum);
                    }
                }
            }
        }
    }

    /// 16 floats.
    #[target_feature(enable = "avx512f")]
    fn load(values: &[f32]) -> __m512 {
        assert_eq!(values.len(), TILE);
        // SAFETY: checked just above.
        unsafe { _mm512_loadu_ps(values.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights and activations from a fixed pattern, and the same product
    /// in plain arithmetic on the dequantized values.
    #[test]
    fn the_kernel_equals_the_product_of_the_dequantized_values() {
        if !supported() {
            eprintln!("skipped: this processor has no AVX-512 VNNI");
            return;
        }
        let (rows, k) = (96, 96);
        let per_row = k / BLOCK;
        let mut state = 5u32;
        let mut next = || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            state >> 16
        };
        let blocks: Vec<(f32, f32, [u8; BLOCK / 2])> = (0..rows * per_row)
            .map(|_| {
                let d = (1 + next() % 64) as f32 / 512.0;
                let m = (next() % 64) as f32 / 128.0 - 0.25;
                (d, m, std::array::from_fn(|_| next() as u8))
            })
            .collect();
        let tiles = Q4Tiles::new(rows, k, blocks.iter().copied()).expect("a supported shape");
        for tokens in [1, 3, 5, 6, 7, 13] {
            let values: Vec<i8> = (0..tokens * k).map(|_| (next() % 255) as i8).collect();
            let scales: Vec<f32> = (0..tokens * per_row)
                .map(|_| (1 + next() % 100) as f32 / 1e4)
                .collect();
            let sums: Vec<f32> = (0..tokens * per_row)
                .map(|i| {
                    let block = &values[i * BLOCK..(i + 1) * BLOCK];
                    scales[i] * block.iter().map(|&v| f32::from(v)).sum::<f32>()
                })
                .collect();
            let x = Q8Rows {
                k,
                values: &values,
                scales: &scales,
                sums: &sums,
            };
            // Rows 32..96 of tokens 1.., into a buffer with a wider stride.
            let stride = 70;
            let mut out = vec![1f32; tokens * stride];
            multiply_add(&x, &tiles, 1..tokens, 32..96, &mut out, stride);
            for t in 1..tokens {
                for r in 32..96 {
                    let expected: f64 = (0..k)
                        .map(|c| {
                            let (d, m, qs) = blocks[r * per_row + c / BLOCK];
                            let j = c % BLOCK;
                            let q = if j < BLOCK / 2 {
                                qs[j] & 0x0f
                            } else {
                                qs[j - BLOCK / 2] >> 4
                            };
                            let weight = f64::from(d) * f64::from(q) + f64::from(m);
                            let xv = f64::from(values[t * k + c])
                                * f64::from(scales[t * per_row + c / BLOCK]);
                            weight * xv
                        })
                        .sum();
                    let got = out[(t - 1) * stride + r - 32];
                    assert!(
                        (f64::from(got) - 1.0 - expected).abs() < 1e-4 * expected.abs().max(1.0),
                        "{t} {r}: {got} − 1 against {expected}"
                    );
                }
            }
            // Outside the ranges nothing changed.
            assert!(out[(tokens - 1) * stride..].iter().all(|&v| v == 1.0));
        }
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused() {
        let block = (1.0, 0.0, [0u8; BLOCK / 2]);
        assert!(Q4Tiles::new(16, 64, std::iter::repeat_n(block, 32)).is_none());
        assert!(Q4Tiles::new(32, 64, std::iter::repeat_n(block, 63)).is_none());
        assert!(Q4Tiles::new(32, 48, std::iter::repeat_n(block, 64)).is_none());
    }
}
