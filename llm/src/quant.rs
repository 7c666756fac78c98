//! Quantized weight rows and the matrix-vector kernels of decoding.
//!
//! Decoding one token reads every weight once, so its speed is the speed of a
//! dot product between a quantized weight row and the activations. As in
//! llama.cpp, the activations are quantized too (to 8 bits per value, one
//! scale per block of 32), and each block's dot product runs in integer SIMD.
//! Weights are unpacked at load from ggml's blocks with their f16 scales
//! widened to f32, so the kernel never converts them; each block keeps its
//! scales beside its quants, so a row is one stream through memory.

use candle_core::quantized::GgmlDType;
use half::f16;
use kb_core::quant::{Q4Tiles, Q8Rows};

/// Values per quantization block.
pub(crate) const BLOCK: usize = 32;

/// One Q4_0 block: scale (widened from ggml's f16) and 32 quants.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Q4_0Block {
    d: f32,
    qs: [u8; 16],
}

/// One Q4_1 block: scale, minimum (widened from ggml's f16) and 32 quants.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Q4_1Block {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

/// One Q8_0 block: scale (widened from ggml's f16) and 32 quants.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Q8_0Block {
    d: f32,
    qs: [i8; 32],
}

/// A matrix of quantized rows, `rows × cols`, `cols` a multiple of [`BLOCK`].
#[derive(Debug, Clone)]
pub(crate) enum QuantRows {
    /// ggml Q4_0: `d · (q − 8)`, 4-bit `q`, each block's scale beside its
    /// quants.
    Q4_0 { blocks: Vec<Q4_0Block> },
    /// ggml Q4_1: `d · q + m`, 4-bit `q`; each block's scales beside its
    /// quants, so a row is read as one stream.
    Q4_1 { blocks: Vec<Q4_1Block> },
    /// ggml Q8_0: `d · q`, 8-bit signed `q`, each block's scale beside its
    /// quants.
    Q8_0 { blocks: Vec<Q8_0Block> },
}

impl QuantRows {
    /// Unpacks ggml blocks of `dtype`; `None` for types without a kernel here.
    pub(crate) fn from_ggml(dtype: GgmlDType, bytes: &[u8]) -> Option<Self> {
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        match dtype {
            GgmlDType::Q4_0 => {
                let blocks = bytes
                    .chunks_exact(18)
                    .map(|b| {
                        let mut qs = [0u8; 16];
                        qs.copy_from_slice(&b[2..18]);
                        Q4_0Block {
                            d: half(&b[0..2]),
                            qs,
                        }
                    })
                    .collect();
                Some(QuantRows::Q4_0 { blocks })
            }
            GgmlDType::Q4_1 => {
                let blocks = bytes
                    .chunks_exact(20)
                    .map(|b| {
                        let mut qs = [0u8; 16];
                        qs.copy_from_slice(&b[4..20]);
                        Q4_1Block {
                            d: half(&b[0..2]),
                            m: half(&b[2..4]),
                            qs,
                        }
                    })
                    .collect();
                Some(QuantRows::Q4_1 { blocks })
            }
            GgmlDType::Q8_0 => {
                let blocks = bytes
                    .chunks_exact(34)
                    .map(|b| {
                        let mut qs = [0i8; 32];
                        for (q, v) in qs.iter_mut().zip(&b[2..34]) {
                            *q = *v as i8;
                        }
                        Q8_0Block {
                            d: half(&b[0..2]),
                            qs,
                        }
                    })
                    .collect();
                Some(QuantRows::Q8_0 { blocks })
            }
            _ => None,
        }
    }

    /// Bytes held.
    pub(crate) fn size(&self) -> usize {
        match self {
            QuantRows::Q4_0 { blocks } => blocks.len() * std::mem::size_of::<Q4_0Block>(),
            QuantRows::Q4_1 { blocks } => blocks.len() * std::mem::size_of::<Q4_1Block>(),
            QuantRows::Q8_0 { blocks } => blocks.len() * std::mem::size_of::<Q8_0Block>(),
        }
    }

    /// Row `row` (of `cols` values) as f32.
    pub(crate) fn dequantize_row(&self, row: usize, cols: usize, out: &mut [f32]) {
        let nb = cols / BLOCK;
        for b in 0..nb {
            let block = row * nb + b;
            let out = &mut out[b * BLOCK..(b + 1) * BLOCK];
            match self {
                QuantRows::Q4_0 { blocks } => {
                    let Q4_0Block { d, qs: q } = &blocks[block];
                    for j in 0..16 {
                        out[j] = d * ((q[j] & 15) as f32 - 8.0);
                        out[j + 16] = d * ((q[j] >> 4) as f32 - 8.0);
                    }
                }
                QuantRows::Q4_1 { blocks } => {
                    let Q4_1Block { d, m, qs: q } = &blocks[block];
                    for j in 0..16 {
                        out[j] = d * (q[j] & 15) as f32 + m;
                        out[j + 16] = d * (q[j] >> 4) as f32 + m;
                    }
                }
                QuantRows::Q8_0 { blocks } => {
                    let Q8_0Block { d, qs: q } = &blocks[block];
                    for j in 0..BLOCK {
                        out[j] = d * q[j] as f32;
                    }
                }
            }
        }
    }

    /// The rows repacked for the batched integer kernel of
    /// [`kb_core::quant`]: Q4_0 and Q4_1 on processors with AVX-512 VNNI.
    pub(crate) fn tiles(&self, rows: usize, cols: usize) -> Option<Q4Tiles> {
        match self {
            QuantRows::Q4_0 { blocks } => {
                Q4Tiles::new(rows, cols, blocks.iter().map(|b| (b.d, -8.0 * b.d, b.qs)))
            }
            QuantRows::Q4_1 { blocks } => {
                Q4Tiles::new(rows, cols, blocks.iter().map(|b| (b.d, b.m, b.qs)))
            }
            QuantRows::Q8_0 { .. } => None,
        }
    }

    /// `out[i] = row (first + i) · x` for `out.len()` rows.
    pub(crate) fn matvec(&self, cols: usize, first: usize, x: &QuantizedActs, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the kernels were compiled for.
            unsafe { avx2::matvec(self, cols, first, x, out) };
            return;
        }
        let nb = cols / BLOCK;
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dot_scalar((first + i) * nb, nb, x);
        }
    }

    /// The reference dot product of the `nb` blocks from block `start` with `x`.
    fn dot_scalar(&self, start: usize, nb: usize, x: &QuantizedActs) -> f32 {
        let mut total = 0f32;
        for b in 0..nb {
            let w = start + b;
            let xq = &x.q[b * BLOCK..(b + 1) * BLOCK];
            total += match self {
                QuantRows::Q4_0 { blocks } => {
                    let Q4_0Block { d, qs: q } = &blocks[w];
                    let mut sum = 0i32;
                    for j in 0..16 {
                        sum += (q[j] & 15) as i32 * xq[j] as i32;
                        sum += (q[j] >> 4) as i32 * xq[j + 16] as i32;
                    }
                    d * x.d[b] * (sum as f32 - 8.0 * x.qsum[b])
                }
                QuantRows::Q4_1 { blocks } => {
                    let Q4_1Block { d, m, qs: q } = &blocks[w];
                    let mut sum = 0i32;
                    for j in 0..16 {
                        sum += (q[j] & 15) as i32 * xq[j] as i32;
                        sum += (q[j] >> 4) as i32 * xq[j + 16] as i32;
                    }
                    d * x.d[b] * sum as f32 + m * x.s[b]
                }
                QuantRows::Q8_0 { blocks } => {
                    let Q8_0Block { d, qs: q } = &blocks[w];
                    let sum: i32 = q.iter().zip(xq).map(|(a, b)| *a as i32 * *b as i32).sum();
                    d * x.d[b] * sum as f32
                }
            };
        }
        total
    }
}

/// A vector quantized to 8 bits per value, llama.cpp's Q8_1 layout: per block
/// a scale `d` (rounded to f16, as ggml stores it), the sum of the quants, and
/// `s = d · Σq` (also f16-rounded).
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantizedActs {
    pub(crate) d: Vec<f32>,
    pub(crate) qsum: Vec<f32>,
    pub(crate) s: Vec<f32>,
    pub(crate) q: Vec<i8>,
}

impl QuantizedActs {
    /// Quantizes `x` (length a multiple of [`BLOCK`]), reusing the buffers.
    pub(crate) fn quantize(&mut self, x: &[f32]) {
        let nb = x.len() / BLOCK;
        // Every value is overwritten.
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.qsum.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function was compiled for.
            unsafe { quantize_blocks_avx2(x, self) };
            return;
        }
        quantize_blocks(x, self);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_blocks_avx2(x: &[f32], acts: &mut QuantizedActs) {
    quantize_blocks(x, acts)
}

/// [`QuantizedActs::quantize`] into buffers of the right sizes, written so
/// that it vectorises: eight running maxima, and no float-to-integer cast
/// (Rust's saturate).
#[inline(always)]
fn quantize_blocks(x: &[f32], acts: &mut QuantizedActs) {
    const MAGIC: f32 = 12_582_912.0;
    for ((((block, q), d_out), qsum), s) in x
        .chunks_exact(BLOCK)
        .zip(acts.q.chunks_exact_mut(BLOCK))
        .zip(&mut acts.d)
        .zip(&mut acts.qsum)
        .zip(&mut acts.s)
    {
        let mut maxima = [0f32; 8];
        for eight in block.chunks_exact(8) {
            for (m, v) in maxima.iter_mut().zip(eight) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = maxima.iter().fold(0f32, |m, &a| m.max(a));
        let d = amax / 127.0;
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in q.iter_mut().zip(block) {
            // Rounded half to even by adding 1.5·2²³ (the addition rounds),
            // then read as an integer from the bits of that sum.
            let r = (v * id + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
            *q = r as i8;
            sum += r;
        }
        *d_out = f16::from_f32(d).to_f32();
        *qsum = sum as f32;
        *s = f16::from_f32(d * sum as f32).to_f32();
    }
}

/// Prompt rows quantized together for the batched integer kernel, each row
/// exactly as [`QuantizedActs::quantize`] quantizes it alone.
#[derive(Debug)]
pub(crate) struct QuantizedBatch {
    cols: usize,
    acts: QuantizedActs,
    /// Per block, `d·Σq`: what multiplies Q4_0's offset `−8d`, as its
    /// decoding kernel computes it. (Q4_1's offset takes `s`, as its
    /// decoding kernel does.)
    sums: Vec<f32>,
}

impl QuantizedBatch {
    /// Quantizes the rows of `input` (`cols` values each).
    pub(crate) fn new(input: &[f32], cols: usize) -> Self {
        // Blocks never straddle rows (`cols` is a multiple of 32), so the
        // rows quantize as one long vector.
        let mut acts = QuantizedActs::default();
        acts.quantize(input);
        let sums = acts.d.iter().zip(&acts.qsum).map(|(d, q)| d * q).collect();
        QuantizedBatch { cols, acts, sums }
    }

    /// The rows as the kernel reads them for a product with `weights`.
    pub(crate) fn view(&self, weights: &QuantRows) -> Q8Rows<'_> {
        let sums = match weights {
            QuantRows::Q4_0 { .. } => &self.sums,
            _ => &self.acts.s,
        };
        Q8Rows {
            k: self.cols,
            values: &self.acts.q,
            scales: &self.acts.d,
            sums,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Q4_0Block, Q4_1Block, Q8_0Block, QuantRows, QuantizedActs};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn matvec(
        w: &QuantRows,
        cols: usize,
        first: usize,
        x: &QuantizedActs,
        out: &mut [f32],
    ) {
        let nb = cols / BLOCK;
        match w {
            QuantRows::Q4_1 { blocks } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let start = (first + i) * nb;
                    *o = dot_q4_1(&blocks[start..start + nb], x);
                }
            }
            QuantRows::Q4_0 { blocks } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let start = (first + i) * nb;
                    *o = dot_q4_0(&blocks[start..start + nb], x);
                }
            }
            QuantRows::Q8_0 { blocks } => {
                for (i, o) in out.iter_mut().enumerate() {
                    let start = (first + i) * nb;
                    *o = dot_q8_0(&blocks[start..start + nb], x);
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 32 unsigned 4-bit values of a block, in order, one per byte.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn nibbles(qs: &[u8; 16]) -> __m256i {
        // SAFETY: 16 bytes are read from a 16-byte array; loadu has no
        // alignment requirement.
        let raw = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(raw, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn acts(x: &QuantizedActs, b: usize) -> __m256i {
        debug_assert!(x.q.len() >= (b + 1) * BLOCK);
        // SAFETY: block `b` of the activations is in bounds.
        unsafe { _mm256_loadu_si256(x.q.as_ptr().add(b * BLOCK).cast()) }
    }

    /// Σ over 32 lanes of unsigned `w` × signed `x`, as 8 i32 partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(w, x);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_q4_1(blocks: &[Q4_1Block], x: &QuantizedActs) -> f32 {
        let nb = blocks.len();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut offset = 0f32;
        let mut b = 0;
        while b + 1 < nb {
            let (w0, w1) = (&blocks[b], &blocks[b + 1]);
            let p0 = dot_u8_i8(nibbles(&w0.qs), acts(x, b));
            let p1 = dot_u8_i8(nibbles(&w1.qs), acts(x, b + 1));
            acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(w0.d * x.d[b]), acc0);
            acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps(w1.d * x.d[b + 1]), acc1);
            offset += w0.m * x.s[b] + w1.m * x.s[b + 1];
            b += 2;
        }
        if b < nb {
            let w = &blocks[b];
            let p = dot_u8_i8(nibbles(&w.qs), acts(x, b));
            acc0 = _mm256_fmadd_ps(p, _mm256_set1_ps(w.d * x.d[b]), acc0);
            offset += w.m * x.s[b];
        }
        hsum(_mm256_add_ps(acc0, acc1)) + offset
    }

    /// [`dot_q4_1`] for four activation vectors at once; each result has
    /// exactly the arithmetic (and order) of its single-vector call.
    #[target_feature(enable = "avx2,fma")]
    fn dot_q4_0(blocks: &[Q4_0Block], x: &QuantizedActs) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for (b, block) in blocks.iter().enumerate() {
            let p = dot_u8_i8(nibbles(&block.qs), acts(x, b));
            let scale = block.d * x.d[b];
            acc = _mm256_fmadd_ps(p, _mm256_set1_ps(scale), acc);
            offset += scale * x.qsum[b];
        }
        hsum(acc) - 8.0 * offset
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_q8_0(blocks: &[Q8_0Block], x: &QuantizedActs) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, block) in blocks.iter().enumerate() {
            // SAFETY: a block holds 32 quants; loadu has no alignment need.
            let w = unsafe { _mm256_loadu_si256(block.qs.as_ptr().cast()) };
            let xv = acts(x, b);
            // |w| · (x with w's sign) = w · x, with an unsigned left operand.
            let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
            acc = _mm256_fmadd_ps(p, _mm256_set1_ps(block.d * x.d[b]), acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// ggml blocks of random quants and scales.
    fn blocks(dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
        let (size, _) = match dtype {
            GgmlDType::Q4_0 => (18, 0),
            GgmlDType::Q4_1 => (20, 0),
            _ => (34, 0),
        };
        let n = rows * cols / BLOCK;
        let noise = random(n * size, 7);
        let mut bytes = Vec::with_capacity(n * size);
        for b in 0..n {
            let scale = f16::from_f32(0.01 + noise[b * size].abs() * 0.05).to_le_bytes();
            bytes.extend_from_slice(&scale);
            let mut rest = 2;
            if dtype == GgmlDType::Q4_1 {
                bytes.extend_from_slice(&f16::from_f32(noise[b * size + 1] * 0.1).to_le_bytes());
                rest = 4;
            }
            for j in rest..size {
                let v = ((noise[b * size + j] + 1.0) * 127.9) as u8;
                bytes.push(if dtype == GgmlDType::Q8_0 {
                    (v as i8).max(-127) as u8
                } else {
                    v
                });
            }
        }
        bytes
    }

    /// The batched integer kernel gives each token what decoding gives it,
    /// up to the order of the f32 additions.
    #[test]
    fn tiles_match_the_decoding_kernel() {
        let (rows, cols, tokens) = (64, 96, 9);
        let input = random(tokens * cols, 21);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1] {
            let w = QuantRows::from_ggml(dtype, &blocks(dtype, rows, cols)).expect("kernel");
            let Some(tiles) = w.tiles(rows, cols) else {
                eprintln!("skipped: this processor has no AVX-512 VNNI");
                return;
            };
            let batch = QuantizedBatch::new(&input, cols);
            let mut out = vec![0f32; tokens * rows];
            kb_core::quant::multiply_add(
                &batch.view(&w),
                &tiles,
                0..tokens,
                0..rows,
                &mut out,
                rows,
            );
            let mut acts = QuantizedActs::default();
            for t in 0..tokens {
                acts.quantize(&input[t * cols..(t + 1) * cols]);
                let mut expected = vec![0f32; rows];
                w.matvec(cols, 0, &acts, &mut expected);
                for (r, e) in expected.iter().enumerate() {
                    let got = out[t * rows + r];
                    assert!(
                        (got - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{dtype:?} {t} {r}: {got} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn simd_matches_scalar_and_dequantized_dot() {
        let (rows, cols) = (7, 96);
        let x = random(cols, 3);
        let mut acts = QuantizedActs::default();
        acts.quantize(&x);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let w = QuantRows::from_ggml(dtype, &blocks(dtype, rows, cols)).expect("kernel");
            let mut fast = vec![0f32; rows];
            w.matvec(cols, 0, &acts, &mut fast);
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                let scalar = w.dot_scalar(r * cols / BLOCK, cols / BLOCK, &acts);
                assert!(
                    (fast[r] - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
                    "{dtype:?} row {r}: {} vs {scalar}",
                    fast[r]
                );
                w.dequantize_row(r, cols, &mut row);
                let exact: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
                let norm: f32 = row.iter().map(|v| v.abs()).sum::<f32>();
                assert!(
                    (scalar - exact).abs() <= 0.01 * norm,
                    "{dtype:?} row {r}: {scalar} vs {exact}"
                );
            }
        }
    }
}
