//! The integer matrix product, once as generic code over a small set of
//! vector operations ([`simd::Simd`]) and once per instruction set that
//! implements them. Every implementation does the same integer sums and
//! the same f32 operations in the same order, so all give the same bits.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod body;
mod scalar;
mod simd;

pub(crate) use body::Problem;

use crate::formats::Format;
use crate::isa::Isa;

/// Runs `problem` with the kernels of `isa`, which the processor has (the
/// caller checked).
pub(crate) fn run(isa: Isa, format: Format, problem: &Problem<'_>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that the processor has AVX2.
        Isa::Avx2 => unsafe { avx2::run(format, problem) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that the processor has AVX-512 VNNI.
        Isa::Avx512Vnni => unsafe { avx512::run(format, problem) },
        _ => scalar::run(format, problem),
    }
}
