//! [`Simd`] in AVX2 (with F16C), 8 rows per vector: a tile is two halves.
//! Products of unsigned weights and signed bytes go through `vpmaddubsw`
//! (pairs summed in i16, several lines at once where they cannot overflow)
//! and `vpmaddwd`; signed weights through the sign trick
//! (`|w| · (x with w's sign)`).

use std::arch::x86_64::*;

use super::body::{Fmt, Problem, dispatch, run_tiles};
use super::simd::Simd;
use crate::formats::Format;

#[derive(Clone, Copy)]
pub(super) struct Avx2;

// SAFETY (every intrinsic below): these functions are inlined only into
// `run_format`, compiled with AVX2, FMA and F16C, which the processor has.
impl Simd for Avx2 {
    const LANES: usize = 8;
    const SIGNED_BIAS: i32 = 0;
    type B = __m256i;
    type I = __m256i;
    type F = __m256;

    #[inline(always)]
    fn zero_b() -> Self::B {
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn load_b(p: *const u8) -> Self::B {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    fn field(v: Self::B, shift: u32, mask: u8) -> Self::B {
        unsafe {
            let shifted = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32));
            _mm256_and_si256(shifted, _mm256_set1_epi8(mask as i8))
        }
    }

    #[inline(always)]
    fn merge(lo: Self::B, hi: Self::B, shift: u32) -> Self::B {
        unsafe { _mm256_or_si256(lo, _mm256_sll_epi16(hi, _mm_cvtsi32_si128(shift as i32))) }
    }

    #[inline(always)]
    fn dots(w: &[Self::B], x: &[i32], per16: usize) -> Self::I {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut total = _mm256_setzero_si256();
            let mut n = 0;
            while n < w.len() {
                let end = (n + per16).min(w.len());
                let mut pairs = _mm256_maddubs_epi16(w[n], _mm256_set1_epi32(x[n]));
                for m in n + 1..end {
                    let more = _mm256_maddubs_epi16(w[m], _mm256_set1_epi32(x[m]));
                    pairs = _mm256_add_epi16(pairs, more);
                }
                total = _mm256_add_epi32(total, _mm256_madd_epi16(pairs, ones));
                n = end;
            }
            total
        }
    }

    #[inline(always)]
    fn signed(w: Self::B) -> Self::B {
        w
    }

    #[inline(always)]
    fn dots_signed(w: &[Self::B], x: &[i32]) -> Self::I {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut total = _mm256_setzero_si256();
            for (&w, &x) in w.iter().zip(x) {
                let x = _mm256_set1_epi32(x);
                let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
                total = _mm256_add_epi32(total, _mm256_madd_epi16(pairs, ones));
            }
            total
        }
    }

    #[inline(always)]
    fn splat_i(v: i32) -> Self::I {
        unsafe { _mm256_set1_epi32(v) }
    }

    #[inline(always)]
    fn add_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm256_add_epi32(a, b) }
    }

    #[inline(always)]
    fn sub_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm256_sub_epi32(a, b) }
    }

    #[inline(always)]
    fn mul_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm256_mullo_epi32(a, b) }
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> Self::I {
        unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self::I {
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> Self::F {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    fn to_f(v: Self::I) -> Self::F {
        unsafe { _mm256_cvtepi32_ps(v) }
    }

    #[inline(always)]
    fn splat_f(v: f32) -> Self::F {
        unsafe { _mm256_set1_ps(v) }
    }

    #[inline(always)]
    fn add_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm256_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F, n: usize, add: bool) {
        unsafe {
            if n == 8 {
                let v = if add {
                    _mm256_add_ps(_mm256_loadu_ps(p), v)
                } else {
                    v
                };
                _mm256_storeu_ps(p, v);
            } else {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                for (i, v) in lanes.iter().enumerate().take(n) {
                    let dst = p.add(i);
                    *dst = if add { *dst + v } else { *v };
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_format<F: Fmt>(problem: &Problem<'_>) {
    // SAFETY: `problem` was checked by its maker.
    unsafe { run_tiles::<Avx2, F>(problem) }
}

/// The product in AVX2.
///
/// # Safety
/// The processor must have AVX2, FMA and F16C.
pub(super) unsafe fn run(format: Format, problem: &Problem<'_>) {
    fn one<F: Fmt>(problem: &Problem<'_>) {
        // SAFETY: the caller of `run` promised the features.
        unsafe { run_format::<F>(problem) }
    }
    dispatch!(format, one, problem)
}
