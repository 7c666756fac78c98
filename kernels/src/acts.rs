//! [`Activations`]: rows of f32 values quantized to signed bytes, per block,
//! for the integer products. The rounding is ggml's, so the integers are
//! the ones llama.cpp multiplies.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::isa::Isa;

/// How a row is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Scheme {
    /// ggml's Q8_0: per 32 values `d = max|x| / 127` (stored as f16, as
    /// ggml stores it), `q = round(x · 127 / max|x|)`.
    Q8_0,
    /// ggml's Q8_K: per 256 values `q = round(x · 127 / max|x|)`, `d` its
    /// f32 inverse.
    Q8_K,
}

impl Scheme {
    /// Values per block.
    pub fn block(self) -> usize {
        match self {
            Scheme::Q8_0 => 32,
            Scheme::Q8_K => 256,
        }
    }
}

/// Rows of quantized activations: row `t`'s values `q[t·k..(t + 1)·k]`,
/// a scale per block and the sum of the quants per 16 values.
///
/// ```
/// use kb_kernels::{Activations, Isa, Scheme};
///
/// let mut x = Activations::new(Scheme::Q8_0);
/// x.quantize(&[0.5; 64], 32, Isa::best())?;
/// assert_eq!(x.rows(), 2);
/// assert_eq!(x.values(1), &[127i8; 32][..]);
/// # Ok::<(), kb_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Activations {
    scheme: Scheme,
    k: usize,
    rows: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    /// Per block, `d·Σq` rounded to f16 (ggml's Q8_1 `s`, with the
    /// unrounded `d`): what multiplies a block's minimum.
    s: Vec<f32>,
    sums: Vec<i32>,
}

impl Activations {
    /// An empty set of rows, to be filled by [`Activations::quantize`].
    pub fn new(scheme: Scheme) -> Self {
        Activations {
            scheme,
            k: 0,
            rows: 0,
            q: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            sums: Vec::new(),
        }
    }

    /// Quantizes `x` as rows of `k` values (a multiple of the scheme's
    /// block), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], k: usize, isa: Isa) -> Result<()> {
        let block = self.scheme.block();
        if k == 0 || !k.is_multiple_of(block) || !x.len().is_multiple_of(k) {
            return Err(Error::Shape(format!(
                "{} values cannot be quantized as rows of {k} in blocks of {block}",
                x.len()
            )));
        }
        self.k = k;
        self.rows = x.len() / k;
        // Every value is overwritten.
        self.q.resize(x.len(), 0);
        self.d.resize(x.len() / block, 0.0);
        self.s.resize(x.len() / block, 0.0);
        self.sums.resize(x.len() / 16, 0);
        let scheme = self.scheme;
        let run = |x: &[f32], out: Out<'_>| match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni if Isa::Avx2.is_supported() => {
                // SAFETY: the processor has the features `quantize_avx2`
                // is compiled for.
                unsafe { quantize_avx2(scheme, x, out) }
            }
            _ => quantize_all(scheme, x, out),
        };
        // Blocks are quantized independently, so a prompt's rows may be
        // split over the threads without changing a bit.
        if x.len() < PARALLEL_VALUES || rayon::current_num_threads() == 1 {
            let out = Out {
                q: &mut self.q,
                d: &mut self.d,
                s: &mut self.s,
                sums: &mut self.sums,
            };
            run(x, out);
        } else {
            let chunk = k * (PARALLEL_VALUES / 4).div_ceil(k);
            x.par_chunks(chunk)
                .zip(self.q.par_chunks_mut(chunk))
                .zip(self.d.par_chunks_mut(chunk / block))
                .zip(self.s.par_chunks_mut(chunk / block))
                .zip(self.sums.par_chunks_mut(chunk / 16))
                .for_each(|((((x, q), d), s), sums)| run(x, Out { q, d, s, sums }));
        }
        Ok(())
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `t`'s quants.
    pub fn values(&self, t: usize) -> &[i8] {
        &self.q[t * self.k..(t + 1) * self.k]
    }

    /// Row `t`'s value `i`, dequantized.
    pub fn value(&self, t: usize, i: usize) -> f32 {
        let block = self.scheme.block();
        f32::from(self.q[t * self.k + i]) * self.d[(t * self.k + i) / block]
    }

    /// Row `t`'s block `b` sum as ggml's Q8_1 keeps it: `d·Σq` with the
    /// unrounded scale, rounded to f16 (what multiplies a Q4_1 or Q5_1
    /// block's minimum).
    pub fn block_sum(&self, t: usize, b: usize) -> f32 {
        self.s[t * self.k / self.scheme.block() + b]
    }

    pub(crate) fn parts(&self) -> (&[i8], &[f32], &[f32], &[i32]) {
        (&self.q, &self.d, &self.s, &self.sums)
    }
}

/// Values from which [`Activations::quantize`] spreads the rows over the
/// threads.
const PARALLEL_VALUES: usize = 1 << 15;

/// The buffers a quantization fills.
struct Out<'a> {
    q: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [f32],
    sums: &'a mut [i32],
}

/// How one instruction set finds a block's largest magnitude and rounds its
/// values; [`quantize_blocks`] does the rest the same way for every set.
trait Rounding {
    /// The largest `|v|` of `values`.
    fn amax(values: &[f32]) -> f32;
    /// `quants = round(values · inverse)`, half to even, and the sum of the
    /// quants of every 16 values into `sums`.
    fn round(values: &[f32], inverse: f32, quants: &mut [i8], sums: &mut [i32]);
}

/// Quantizes every block of `x` into `out` with `R`, and sets each block's
/// scale and scaled sum as ggml does.
#[inline(always)]
fn quantize_blocks<R: Rounding>(scheme: Scheme, x: &[f32], out: Out<'_>) {
    let block = scheme.block();
    for ((((values, quants), d), s), sums) in x
        .chunks_exact(block)
        .zip(out.q.chunks_exact_mut(block))
        .zip(out.d.iter_mut())
        .zip(out.s.iter_mut())
        .zip(out.sums.chunks_exact_mut(block / 16))
    {
        let amax = R::amax(values);
        let inverse = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        *d = match scheme {
            Scheme::Q8_0 => half::f16::from_f32(amax / 127.0).to_f32(),
            Scheme::Q8_K if amax > 0.0 => 1.0 / inverse,
            Scheme::Q8_K => 0.0,
        };
        R::round(values, inverse, quants, sums);
        let total: i32 = sums.iter().sum();
        *s = half::f16::from_f32(amax / 127.0 * total as f32).to_f32();
    }
}

/// [`Rounding`] in plain Rust, written so that it vectorises: running
/// maxima in lanes, rounding by adding 1.5·2²³ (half to even, as ggml's
/// `nearest_int` and its AVX2 code do) instead of a call or a saturating
/// cast.
struct Portable;

impl Rounding for Portable {
    #[inline(always)]
    fn amax(values: &[f32]) -> f32 {
        let mut maxima = [0f32; 8];
        for eight in values.chunks_exact(8) {
            for (m, v) in maxima.iter_mut().zip(eight) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        maxima.iter().fold(0f32, |m, &a| m.max(a))
    }

    #[inline(always)]
    fn round(values: &[f32], inverse: f32, quants: &mut [i8], sums: &mut [i32]) {
        const MAGIC: f32 = 12_582_912.0;
        for ((sixteen, out), sum) in values
            .chunks_exact(16)
            .zip(quants.chunks_exact_mut(16))
            .zip(sums.iter_mut())
        {
            let mut total = 0i32;
            for (o, v) in out.iter_mut().zip(sixteen) {
                // The sum's low bits hold the rounded integer.
                let r = (v * inverse + MAGIC)
                    .to_bits()
                    .wrapping_sub(MAGIC.to_bits()) as i32;
                *o = r as i8;
                total += r;
            }
            *sum = total;
        }
    }
}

fn quantize_all(scheme: Scheme, x: &[f32], out: Out<'_>) {
    quantize_blocks::<Portable>(scheme, x, out)
}

/// [`Rounding`] in AVX2 intrinsics: the same numbers (`vcvtps2dq` rounds
/// half to even, as the portable code's magic constant does), at a few
/// values per cycle instead of a few cycles per value.
#[cfg(target_arch = "x86_64")]
struct Avx2;

// SAFETY (every intrinsic below): these functions are inlined only into
// `quantize_avx2`, compiled with AVX2, which the processor has.
#[cfg(target_arch = "x86_64")]
impl Rounding for Avx2 {
    #[inline(always)]
    fn amax(values: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        unsafe {
            let magnitude = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
            let mut maxima = _mm256_setzero_ps();
            for eight in values.chunks_exact(8) {
                let v = _mm256_loadu_ps(eight.as_ptr());
                maxima = _mm256_max_ps(maxima, _mm256_and_ps(v, magnitude));
            }
            let half = _mm_max_ps(
                _mm256_castps256_ps128(maxima),
                _mm256_extractf128_ps::<1>(maxima),
            );
            let half = _mm_max_ps(half, _mm_movehl_ps(half, half));
            let half = _mm_max_ss(half, _mm_movehdup_ps(half));
            _mm_cvtss_f32(half)
        }
    }

    #[inline(always)]
    fn round(values: &[f32], inverse: f32, quants: &mut [i8], sums: &mut [i32]) {
        use std::arch::x86_64::*;
        unsafe {
            let scale = _mm256_set1_ps(inverse);
            // `packs` interleaves the 128-bit halves; this puts the bytes back.
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for ((thirty_two, out), pair) in values
                .chunks_exact(32)
                .zip(quants.chunks_exact_mut(32))
                .zip(sums.chunks_exact_mut(2))
            {
                let p = thirty_two.as_ptr();
                let a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), scale));
                let b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(8)), scale));
                let c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(16)), scale));
                let e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(24)), scale));
                let bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
                let bytes = _mm256_permutevar8x32_epi32(bytes, order);
                _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes);
                pair[0] = sum_i32(_mm256_add_epi32(a, b));
                pair[1] = sum_i32(_mm256_add_epi32(c, e));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_avx2(scheme: Scheme, x: &[f32], out: Out<'_>) {
    quantize_blocks::<Avx2>(scheme, x, out)
}

/// The sum of eight i32 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sum_i32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    // SAFETY: inlined only into `quantize_avx2`, compiled with AVX2.
    unsafe {
        let four = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let two = _mm_add_epi32(four, _mm_unpackhi_epi64(four, four));
        let one = _mm_add_epi32(two, _mm_shuffle_epi32::<0b01>(two));
        _mm_cvtsi128_si32(one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_over_threads_give_the_rows_alone() {
        let (rows, k) = (70, 1024);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        for scheme in [Scheme::Q8_0, Scheme::Q8_K] {
            let mut all = Activations::new(scheme);
            pool.install(|| all.quantize(&x, k, Isa::best()))
                .expect("quantize");
            let mut one = Activations::new(scheme);
            for (t, row) in x.chunks(k).enumerate() {
                one.quantize(row, k, Isa::best()).expect("quantize");
                assert_eq!(all.values(t), one.values(0));
                let blocks = k / scheme.block();
                for b in 0..blocks {
                    assert_eq!(all.block_sum(t, b).to_bits(), one.block_sum(0, b).to_bits());
                    assert_eq!(
                        all.value(t, b * scheme.block()),
                        one.value(0, b * scheme.block())
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_as_ggml_does() {
        let mut x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 37.0).collect();
        x[3] = -50.0;
        for scheme in [Scheme::Q8_0, Scheme::Q8_K] {
            for isa in Isa::supported() {
                let mut acts = Activations::new(scheme);
                acts.quantize(&x, 256, isa).expect("quantize");
                let block = scheme.block();
                for (b, values) in x.chunks(block).enumerate() {
                    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let inverse = 127.0 / amax;
                    for (i, v) in values.iter().enumerate() {
                        let expected = (v * inverse).round_ties_even() as i8;
                        assert_eq!(acts.q[b * block + i], expected, "{scheme:?} {isa}");
                    }
                    let sums = &acts.sums[b * block / 16..(b + 1) * block / 16];
                    for (g, s) in sums.iter().enumerate() {
                        let q = &acts.q[b * block + 16 * g..b * block + 16 * (g + 1)];
                        assert_eq!(*s, q.iter().map(|&v| i32::from(v)).sum::<i32>());
                    }
                }
            }
        }
        let mut acts = Activations::new(Scheme::Q8_K);
        assert!(acts.quantize(&x, 32, Isa::Scalar).is_err());
        assert!(acts.quantize(&x[..200], 256, Isa::Scalar).is_err());
    }

    #[test]
    fn every_family_quantizes_alike() {
        // Halves (ties) where the scale is 1, and values of every size.
        let mut x: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919) % 2039) as f32 / 8.0 - 127.0)
            .collect();
        for block in x.chunks_mut(32) {
            block[0] = 127.0;
        }
        for scheme in [Scheme::Q8_0, Scheme::Q8_K] {
            let mut scalar = Activations::new(scheme);
            scalar.quantize(&x, 256, Isa::Scalar).expect("quantize");
            for isa in Isa::supported() {
                let mut other = Activations::new(scheme);
                other.quantize(&x, 256, isa).expect("quantize");
                assert_eq!(other.q, scalar.q, "{scheme:?} {isa}");
                assert_eq!(other.sums, scalar.sums, "{scheme:?} {isa}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&other.d), bits(&scalar.d), "{scheme:?} {isa}");
                assert_eq!(bits(&other.s), bits(&scalar.s), "{scheme:?} {isa}");
            }
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let mut acts = Activations::new(Scheme::Q8_0);
        acts.quantize(&[0.0; 32], 32, Isa::best())
            .expect("quantize");
        assert!(acts.q.iter().all(|&q| q == 0));
        assert_eq!(acts.d, vec![0.0]);
    }
}
