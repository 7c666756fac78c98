//! Batched products of [`q4_0`] weights with [`Q8Rows`] activations in
//! integer arithmetic, on processors with AVX-512 VNNI.
//!
//! One `vpdpbusd` multiplies 64 pairs of bytes and adds them, four by four,
//! into 16 integer sums: four times the multiply-adds of an f32 FMA of the
//! same width. For the instruction to serve 16 weight rows at once, the
//! weights are repacked at load into [`PackedQ4`] tiles of 16 rows, in which
//! each 64-byte line holds four consecutive columns of every row (row `r`'s
//! in bytes `4r..4r + 4`); four activation bytes broadcast to all 16 lanes
//! then meet the right weights. Q4_0's quants are stored as unsigned bytes
//! (0..15); its offset of 8 comes off through the activations' block sums,
//! `Σ (q − 8)·x = Σ q·x − 8·Σ x`. The block sums are exact integers, scaled
//! by both blocks' scales and accumulated in f32: the arithmetic of
//! [`q8_0::dot_rows`](crate::q8_0::dot_rows), with the same results up to
//! the order of the f32 additions.

use rayon::prelude::*;

use crate::q4_0;
use crate::q8_0::Q8Rows;

/// Weight rows per tile: the 32-bit lanes of one 512-bit register.
const TILE: usize = 16;
/// Bytes of one tile's block: 16 rows × 32 columns.
const TILE_BLOCK: usize = TILE * q4_0::BLOCK;
/// Activation rows per call of the micro-kernel.
const TOKENS: usize = 6;
/// Activation rows per parallel task: enough to reuse each weight tile.
const TASK_TOKENS: usize = 48;

/// Q4_0 weights repacked for [`multiply_add`].
pub(crate) struct PackedQ4 {
    rows: usize,
    k: usize,
    /// `rows/16` tiles × `k/32` blocks × 8 groups of 4 columns × 16 rows ×
    /// 4 quants, each 0..15 in a byte.
    quants: Vec<u8>,
    /// `rows/16` tiles × `k/32` blocks × 16 rows: the blocks' scales.
    scales: Vec<f32>,
}

impl PackedQ4 {
    /// Repacks `rows` Q4_0 rows of `k` columns. `None` when this processor
    /// has no AVX-512 VNNI or the shape does not fit the kernel (`rows` a
    /// multiple of 32, `k` of 32).
    pub(crate) fn new(bytes: &[u8], rows: usize, k: usize) -> Option<Self> {
        let blocks = k / q4_0::BLOCK;
        if !supported()
            || !rows.is_multiple_of(2 * TILE)
            || !k.is_multiple_of(q4_0::BLOCK)
            || bytes.len() != rows * blocks * q4_0::BLOCK_BYTES
        {
            return None;
        }
        let mut quants = vec![0u8; rows * k];
        let mut scales = vec![0f32; rows * blocks];
        for (r, row) in bytes.chunks_exact(blocks * q4_0::BLOCK_BYTES).enumerate() {
            let (tile, lane) = (r / TILE, r % TILE);
            for (b, block) in row.chunks_exact(q4_0::BLOCK_BYTES).enumerate() {
                let at = tile * blocks + b;
                scales[at * TILE + lane] =
                    q4_0::f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                let dst = &mut quants[at * TILE_BLOCK..(at + 1) * TILE_BLOCK];
                for (i, &q) in block[2..].iter().enumerate() {
                    // Byte i holds column i (low nibble) and column i + 16.
                    for (column, value) in [(i, q & 0x0f), (i + 16, q >> 4)] {
                        dst[(column / 4) * 4 * TILE + lane * 4 + column % 4] = value;
                    }
                }
            }
        }
        Some(PackedQ4 {
            rows,
            k,
            quants,
            scales,
        })
    }
}

/// Whether this processor runs [`multiply_add`].
pub(crate) fn supported() -> bool {
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

/// `out[t·n + j] += x[t] · w[j]` for every row `t` of `x` and row `j` of the
/// `n` weight rows; the tasks are groups of activation rows.
pub(crate) fn multiply_add(x: &Q8Rows, w: &PackedQ4, out: &mut [f32]) {
    let n = w.rows;
    assert_eq!(x.k(), w.k, "the activations' width is not the weights'");
    assert_eq!(out.len(), x.tokens() * n, "the output is not tokens × rows");
    #[cfg(target_arch = "x86_64")]
    out.par_chunks_mut(TASK_TOKENS * n)
        .enumerate()
        .for_each(|(c, out)| {
            // SAFETY: `PackedQ4::new` returned weights only where the
            // processor has the features `task` is compiled for.
            unsafe { kernel::task(x, w, c * TASK_TOKENS, out) }
        });
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{PackedQ4, Q8Rows, TILE, TILE_BLOCK, TOKENS};
    use crate::q4_0;

    /// The rows `first..` of `x` (as many as `out` has rows) against every
    /// pair of weight tiles.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) fn task(x: &Q8Rows, w: &PackedQ4, first: usize, out: &mut [f32]) {
        let count = out.len() / w.rows;
        for pair in 0..w.rows / (2 * TILE) {
            let mut t = 0;
            while t < count {
                let len = (count - t).min(TOKENS);
                let at = Tile {
                    x,
                    w,
                    first: first + t,
                    pair,
                };
                let out = &mut out[t * w.rows..];
                match len {
                    1 => at.multiply_add::<1>(out),
                    2 => at.multiply_add::<2>(out),
                    3 => at.multiply_add::<3>(out),
                    4 => at.multiply_add::<4>(out),
                    5 => at.multiply_add::<5>(out),
                    _ => at.multiply_add::<6>(out),
                }
                t += len;
            }
        }
    }

    /// A few activation rows against two weight tiles (32 rows).
    struct Tile<'a> {
        x: &'a Q8Rows,
        w: &'a PackedQ4,
        first: usize,
        pair: usize,
    }

    impl Tile<'_> {
        /// `out[t·n + 32·pair + c] += x[first + t] · w[32·pair + c]` for
        /// `t < R`, `c < 32`. Per block of 32 columns: 8 steps of four
        /// columns, each a broadcast of four activation bytes per row and two
        /// `vpdpbusd`; then the integer sums, started at `−8·Σx`, are scaled
        /// and added in f32.
        #[target_feature(enable = "avx512f,avx512vnni")]
        fn multiply_add<const R: usize>(&self, out: &mut [f32]) {
            let (x, w) = (self.x, self.w);
            let blocks = w.k / q4_0::BLOCK;
            let n = w.rows;
            debug_assert!(out.len() >= (R - 1) * n + (self.pair + 1) * 2 * TILE);
            debug_assert!(self.first + R <= x.tokens());
            let tile0 = 2 * self.pair * blocks;
            let tile1 = tile0 + blocks;
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for b in 0..blocks {
                let mut sums: [[__m512i; 2]; R] = [[_mm512_set1_epi32(0); 2]; R];
                for (r, s) in sums.iter_mut().enumerate() {
                    let start = _mm512_set1_epi32(-8 * x.sum(self.first + r, b));
                    *s = [start, start];
                }
                let q0 = &w.quants[(tile0 + b) * TILE_BLOCK..(tile0 + b + 1) * TILE_BLOCK];
                let q1 = &w.quants[(tile1 + b) * TILE_BLOCK..(tile1 + b + 1) * TILE_BLOCK];
                for g in 0..q4_0::BLOCK / 4 {
                    // SAFETY: each slice holds 8 lines of 64 bytes.
                    let (w0, w1) = unsafe {
                        (
                            _mm512_loadu_si512(q0.as_ptr().add(g * 64).cast()),
                            _mm512_loadu_si512(q1.as_ptr().add(g * 64).cast()),
                        )
                    };
                    for (r, s) in sums.iter_mut().enumerate() {
                        let a = _mm512_set1_epi32(x.four(self.first + r, b * q4_0::BLOCK + g * 4));
                        s[0] = _mm512_dpbusd_epi32(s[0], w0, a);
                        s[1] = _mm512_dpbusd_epi32(s[1], w1, a);
                    }
                }
                let d0 = scales(&w.scales[(tile0 + b) * TILE..]);
                let d1 = scales(&w.scales[(tile1 + b) * TILE..]);
                for (r, (acc, s)) in acc.iter_mut().zip(&sums).enumerate() {
                    let dx = _mm512_set1_ps(x.scale(self.first + r, b));
                    acc[0] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[0]), _mm512_mul_ps(d0, dx), acc[0]);
                    acc[1] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[1]), _mm512_mul_ps(d1, dx), acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (half, acc) in acc.iter().enumerate() {
                    let at = r * n + self.pair * 2 * TILE + half * TILE;
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

    /// The 16 floats at the start of `scales`.
    #[target_feature(enable = "avx512f")]
    fn scales(scales: &[f32]) -> __m512 {
        assert!(scales.len() >= TILE);
        // SAFETY: checked just above.
        unsafe { _mm512_loadu_ps(scales.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_0;

    /// Q4_0 rows with varied scales and nibbles, from a fixed pattern.
    fn rows(count: usize, k: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut state = 11u32;
        for _ in 0..count * k / q4_0::BLOCK {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let scale: u16 = (((9 + (state >> 16) % 4) as u16) << 10) | (state as u16 & 0x3ff);
            bytes.extend_from_slice(&scale.to_le_bytes());
            for _ in 0..16 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                bytes.push((state >> 16) as u8);
            }
        }
        bytes
    }

    /// Every row count from 1 to past two tasks, against the row-by-row
    /// kernel: the same integer sums, so equal up to f32 summation order.
    #[test]
    fn the_tiled_kernel_matches_the_row_kernel() {
        if !supported() {
            eprintln!("skipped: this processor has no AVX-512 VNNI");
            return;
        }
        let (n, k) = (64, 96);
        let weights = rows(n, k);
        let packed = PackedQ4::new(&weights, n, k).expect("a supported shape");
        for tokens in (1..=13).chain([TASK_TOKENS + 7, 2 * TASK_TOKENS + 1]) {
            let input: Vec<f32> = (0..tokens * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let x = Q8Rows::quantize(&input, tokens, k);
            let mut expected = vec![0f32; tokens * n];
            q8_0::dot_rows(&x, &weights, &mut expected);
            let mut got = vec![1f32; tokens * n];
            multiply_add(&x, &packed, &mut got);
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - 1.0 - e).abs() <= 1e-4 * e.abs().max(1.0),
                    "{tokens} rows, [{i}]: {g} − 1 against {e}"
                );
            }
        }
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused() {
        assert!(PackedQ4::new(&rows(16, 64), 16, 64).is_none());
        assert!(PackedQ4::new(&rows(32, 64)[..100], 32, 64).is_none());
    }
}
