//! [`Simd`] in plain Rust, 16 rows per vector: the reference the other
//! instruction sets must equal, and the kernels of any other processor.

use super::body::{Problem, dispatch, run_tiles};
use super::simd::Simd;
use crate::formats::Format;

const LANES: usize = 16;

#[derive(Clone, Copy)]
pub(super) struct Scalar;

impl Simd for Scalar {
    const LANES: usize = LANES;
    const SIGNED_BIAS: i32 = 0;
    type B = [u8; 4 * LANES];
    type I = [i32; LANES];
    type F = [f32; LANES];

    #[inline(always)]
    fn zero_b() -> Self::B {
        [0; 4 * LANES]
    }

    #[inline(always)]
    unsafe fn load_b(p: *const u8) -> Self::B {
        // SAFETY: the caller promises 64 readable bytes.
        unsafe { p.cast::<[u8; 4 * LANES]>().read_unaligned() }
    }

    #[inline(always)]
    fn field(v: Self::B, shift: u32, mask: u8) -> Self::B {
        v.map(|b| (b >> shift) & mask)
    }

    #[inline(always)]
    fn merge(lo: Self::B, hi: Self::B, shift: u32) -> Self::B {
        std::array::from_fn(|i| lo[i] | (hi[i] << shift))
    }

    #[inline(always)]
    fn dots(w: &[Self::B], x: &[i32], _per16: usize) -> Self::I {
        std::array::from_fn(|lane| {
            w.iter()
                .zip(x)
                .map(|(w, &x)| {
                    let x = x.to_le_bytes();
                    (0..4)
                        .map(|c| i32::from(w[4 * lane + c]) * i32::from(x[c] as i8))
                        .sum::<i32>()
                })
                .sum()
        })
    }

    #[inline(always)]
    fn signed(w: Self::B) -> Self::B {
        w
    }

    #[inline(always)]
    fn dots_signed(w: &[Self::B], x: &[i32]) -> Self::I {
        std::array::from_fn(|lane| {
            w.iter()
                .zip(x)
                .map(|(w, &x)| {
                    let x = x.to_le_bytes();
                    (0..4)
                        .map(|c| i32::from(w[4 * lane + c] as i8) * i32::from(x[c] as i8))
                        .sum::<i32>()
                })
                .sum()
        })
    }

    #[inline(always)]
    fn splat_i(v: i32) -> Self::I {
        [v; LANES]
    }

    #[inline(always)]
    fn add_i(a: Self::I, b: Self::I) -> Self::I {
        std::array::from_fn(|i| a[i].wrapping_add(b[i]))
    }

    #[inline(always)]
    fn sub_i(a: Self::I, b: Self::I) -> Self::I {
        std::array::from_fn(|i| a[i].wrapping_sub(b[i]))
    }

    #[inline(always)]
    fn mul_i(a: Self::I, b: Self::I) -> Self::I {
        std::array::from_fn(|i| a[i].wrapping_mul(b[i]))
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const u8) -> Self::I {
        // SAFETY: the caller promises 16 readable bytes.
        let bytes = unsafe { p.cast::<[u8; LANES]>().read_unaligned() };
        bytes.map(|b| i32::from(b as i8))
    }

    #[inline(always)]
    unsafe fn load_u8(p: *const u8) -> Self::I {
        // SAFETY: the caller promises 16 readable bytes.
        let bytes = unsafe { p.cast::<[u8; LANES]>().read_unaligned() };
        bytes.map(i32::from)
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> Self::F {
        // SAFETY: the caller promises 32 readable bytes.
        let bits = unsafe { p.cast::<[u16; LANES]>().read_unaligned() };
        bits.map(|b| half::f16::from_bits(u16::from_le(b)).to_f32())
    }

    #[inline(always)]
    fn to_f(v: Self::I) -> Self::F {
        v.map(|i| i as f32)
    }

    #[inline(always)]
    fn splat_f(v: f32) -> Self::F {
        [v; LANES]
    }

    #[inline(always)]
    fn add_f(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    fn sub_f(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] - b[i])
    }

    #[inline(always)]
    fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] * b[i])
    }

    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F, n: usize, add: bool) {
        for (i, v) in v.iter().enumerate().take(n) {
            // SAFETY: the caller promises `n` writable floats.
            unsafe {
                let dst = p.add(i);
                *dst = if add { *dst + v } else { *v };
            }
        }
    }
}

/// The product in plain Rust.
pub(super) fn run(format: Format, problem: &Problem<'_>) {
    fn one<F: super::body::Fmt>(problem: &Problem<'_>) {
        // SAFETY: `problem` was checked by its maker.
        unsafe { run_tiles::<Scalar, F>(problem) }
    }
    dispatch!(format, one, problem)
}
