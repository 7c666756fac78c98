//! Numeric helpers the local engines share, written so that loops over them
//! vectorise: no libm call, no float-to-integer cast (Rust's saturate), no
//! single running reduction.

/// Lanes of [`max`]'s running maxima.
const LANES: usize = 16;

/// e^x, relative error about 10⁻⁷, branch-free; below about −87 it gives a
/// tiny normal number instead of 0.
///
/// ```
/// let e = kb_kernels::math::fast_exp(1.0);
/// assert!((e - std::f32::consts::E).abs() < 1e-6);
/// ```
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (no libm call).
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_41 + r * (0.008_333_452 + r * 0.001_394_978_6)))));
    // 2ⁿ, built in the exponent field. The low bits of `shifted` hold n
    // (its bits are SHIFT's plus n), so no float-to-integer conversion is
    // needed.
    let biased = shifted
        .to_bits()
        .wrapping_sub(SHIFT.to_bits())
        .wrapping_add(127);
    f32::from_bits(biased << 23) * p
}

/// The largest of `values` (−∞ when empty), found in 16 running maxima; the
/// order does not change a maximum, so this equals a left-to-right fold.
///
/// ```
/// assert_eq!(kb_kernels::math::max(&[1.0, -3.0, 7.5, 2.0]), 7.5);
/// ```
#[inline(always)]
pub fn max(values: &[f32]) -> f32 {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in maxima.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&maxima)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let (fast, exact) = (fast_exp(x), x.exp());
            assert!(
                (fast - exact).abs() <= 2e-6 * exact,
                "{x}: {fast} vs {exact}"
            );
        }
    }

    #[test]
    fn max_equals_a_fold_at_every_length() {
        for len in 0..40 {
            let values: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
                .collect();
            let fold = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&values), fold, "{len} values");
        }
    }
}
