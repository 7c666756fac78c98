//! [`Simd`] in AVX-512 with VNNI, 16 rows per vector: one `vpdpbusd` adds
//! four byte products per row into its i32. Signed weights are shifted to
//! unsigned (`q + 128`), the bias taken back through the activations' sum.

use std::arch::x86_64::*;

use super::body::{Fmt, Problem, dispatch, run_tiles};
use super::simd::Simd;
use crate::formats::Format;

#[derive(Clone, Copy)]
pub(super) struct Avx512;

// SAFETY (every intrinsic below): these functions are inlined only into
// `run_format`, compiled with AVX-512 F, BW and VNNI, which the processor
// has.
impl Simd for Avx512 {
    const LANES: usize = 16;
    const SIGNED_BIAS: i32 = 128;
    type B = __m512i;
    type I = __m512i;
    type F = __m512;

    #[inline(always)]
    fn zero_b() -> Self::B {
        unsafe { _mm512_setzero_si512() }
    }

    #[inline(always)]
    unsafe fn load_b(p: *const u8) -> Self::B {
        unsafe { _mm512_loadu_si512(p.cast()) }
    }

    #[inline(always)]
    fn field(v: Self::B, shift: u32, mask: u8) -> Self::B {
        unsafe {
            let shifted = _mm512_srl_epi16(v, _mm_cvtsi32_si128(shift as i32));
            _mm512_and_si512(shifted, _mm512_set1_epi8(mask as i8))
        }
    }

    #[inline(always)]
    fn merge(lo: Self::B, hi: Self::B, shift: u32) -> Self::B {
        unsafe { _mm512_or_si512(lo, _mm512_sll_epi16(hi, _mm_cvtsi32_si128(shift as i32))) }
    }

    #[inline(always)]
    fn dots(w: &[Self::B], x: &[i32], _per16: usize) -> Self::I {
        unsafe {
            let mut total = _mm512_setzero_si512();
            for (&w, &x) in w.iter().zip(x) {
                total = _mm512_dpbusd_epi32(total, w, _mm512_set1_epi32(x));
            }
            total
        }
    }

    #[inline(always)]
    fn signed(w: Self::B) -> Self::B {
        // `q + 128`: unsigned, as `vpdpbusd` reads its first operand.
        unsafe { _mm512_xor_si512(w, _mm512_set1_epi8(-128)) }
    }

    #[inline(always)]
    fn dots_signed(w: &[Self::B], x: &[i32]) -> Self::I {
        Self::dots(w, x, 0)
    }

    #[inline(always)]
    fn splat_i(v: i32) -> Self::I {
        unsafe { _mm512_set1_epi32(v) }
    }

    #[inline(always)]
    fn add_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm512_add_epi32(a, b) }
    }

    #[inline(always)]
    fn sub_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm512_sub_epi32(a, b) }
    }

    #[inline(always)]
    fn mul_i(a: Self::I, b: Self::I) -> Self::I {
        unsafe { _mm512_mullo_epi32(a, b) }
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> Self::I {
        unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self::I {
        unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> Self::F {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[inline(always)]
    fn to_f(v: Self::I) -> Self::F {
        unsafe { _mm512_cvtepi32_ps(v) }
    }

    #[inline(always)]
    fn splat_f(v: f32) -> Self::F {
        unsafe { _mm512_set1_ps(v) }
    }

    #[inline(always)]
    fn add_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm512_sub_ps(a, b) }
    }

    #[inline(always)]
    fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        unsafe { _mm512_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F, n: usize, add: bool) {
        unsafe {
            let mask: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
            let v = if add {
                _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), v)
            } else {
                v
            };
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn run_format<F: Fmt>(problem: &Problem<'_>) {
    // SAFETY: `problem` was checked by its maker.
    unsafe { run_tiles::<Avx512, F>(problem) }
}

/// The product in AVX-512 VNNI.
///
/// # Safety
/// The processor must have AVX-512 F, BW and VNNI.
pub(super) unsafe fn run(format: Format, problem: &Problem<'_>) {
    fn one<F: Fmt>(problem: &Problem<'_>) {
        // SAFETY: the caller of `run` promised the features.
        unsafe { run_format::<F>(problem) }
    }
    dispatch!(format, one, problem)
}
