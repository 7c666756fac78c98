//! The f32 building blocks both engines use beside the integer products:
//! a matrix product through the `gemm` crate, a dot product that vectorises,
//! the AVX2+FMA dispatch of such loops ([`with_avx2_fma!`](crate::with_avx2_fma)),
//! and [`DisjointWrites`], one output buffer shared by tasks that each write
//! their own part of it.

use std::marker::PhantomData;

/// The body of a function that calls `$generic` (an `#[inline(always)]`
/// function taking the same arguments) compiled for AVX2 and FMA when the
/// processor has them, otherwise for the baseline target. The arithmetic is
/// the same either way (Rust never fuses a multiply and an add on its own);
/// only the width of the instructions differs.
///
/// It returns from the enclosing function (or closure), so it is that
/// function's whole body:
///
/// ```
/// #[inline(always)]
/// fn scale_generic(values: &mut [f32], by: f32) {
///     values.iter_mut().for_each(|v| *v *= by);
/// }
///
/// fn scale(values: &mut [f32], by: f32) {
///     kb_kernels::with_avx2_fma!(scale_generic(values: &mut [f32], by: f32))
/// }
///
/// let mut v = [1.0, 2.0];
/// scale(&mut v, 0.5);
/// assert_eq!(v, [0.5, 1.0]);
/// ```
#[macro_export]
macro_rules! with_avx2_fma {
    ($generic:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn fast($($arg: $ty),*) $(-> $ret)? {
                $generic($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the features `fast` was compiled for are present.
                return unsafe { fast($($arg),*) };
            }
        }
        $generic($($arg),*)
    }};
}

/// `out (n × m) = input (n × k) · weightᵀ` (`weight` is m × k, row-major),
/// or added to `out` when `accumulate`; spread over the rayon pool when
/// `parallel` and the pool has more than one thread. Blocked and fast for
/// many rows; its sums are not in a fixed order, so a row's result may
/// differ in the last bits with `n`.
///
/// ```
/// let (input, weight) = ([1.0, 2.0], [3.0, 4.0, 5.0, 6.0]);
/// let mut out = [1.0; 2];
/// kb_kernels::dense::matmul(&input, 1, 2, &weight, 2, &mut out, true, false);
/// assert_eq!(out, [12.0, 18.0]);
/// ```
///
/// # Panics
///
/// When a buffer's length is not the one its shape gives.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    input: &[f32],
    n: usize,
    k: usize,
    weight: &[f32],
    m: usize,
    out: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert_eq!(input.len(), n * k, "matmul input shape");
    assert_eq!(weight.len(), m * k, "matmul weight shape");
    assert_eq!(out.len(), n * m, "matmul output shape");
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers have the asserted shapes; `input` and `out`
    // are row-major, `weight` is read transposed through its strides.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            m as isize,
            accumulate,
            input.as_ptr(),
            1,
            k as isize,
            weight.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A dot product in 16 running sums of fused multiply-adds, added in order
/// at the end: the same bits on every processor, vectorised on those with
/// AVX2.
///
/// ```
/// assert_eq!(kb_kernels::dense::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::with_avx2_fma!(dot_inlined(a: &[f32], b: &[f32]) -> f32)
}

/// [`dot`]'s body, inlined where it is called: inside a loop compiled by
/// [`with_avx2_fma!`](crate::with_avx2_fma) it vectorises as `dot` does, and
/// gives its bits, without a dispatch per call.
#[inline(always)]
pub fn dot_inlined(a: &[f32], b: &[f32]) -> f32 {
    let (a16, a_tail) = a.as_chunks::<16>();
    let (b16, b_tail) = b.as_chunks::<16>();
    let mut acc = [0f32; 16];
    for (x, y) in a16.iter().zip(b16) {
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail = x.mul_add(*y, tail);
    }
    let mut sum = 0f32;
    for v in acc {
        sum += v;
    }
    sum + tail
}

/// One f32 buffer shared by parallel tasks that each write their own part
/// of it (a head's columns of some rows, say), which `&mut` slices cannot
/// express when the parts interleave.
///
/// ```
/// use kb_kernels::dense::DisjointWrites;
/// use rayon::prelude::*;
///
/// let mut out = vec![0f32; 8];
/// let shared = DisjointWrites::new(&mut out);
/// (0..4usize).into_par_iter().for_each(|task| {
///     // SAFETY: task t writes elements 2t and 2t + 1 only.
///     let part = unsafe { shared.slice(2 * task, 2) };
///     part.fill(task as f32);
/// });
/// assert_eq!(out, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
/// ```
pub struct DisjointWrites<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is borrowed mutably for 'a, and every access goes
// through `slice` or `ptr`, whose callers promise that no two tasks touch
// the same element.
unsafe impl Send for DisjointWrites<'_> {}
unsafe impl Sync for DisjointWrites<'_> {}

impl<'a> DisjointWrites<'a> {
    /// Shares `buffer` for the borrow's lifetime.
    pub fn new(buffer: &'a mut [f32]) -> Self {
        DisjointWrites {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// Elements `start..start + len`.
    ///
    /// # Safety
    ///
    /// No other task reads or writes these elements while the slice lives.
    ///
    /// # Panics
    ///
    /// When the range is outside the buffer.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "{start}+{len} is outside a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) and, by the caller's promise,
        // not aliased.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// A pointer to element `start`, for a strided write (a matrix product
    /// into some columns of some rows) that stays inside the buffer.
    ///
    /// # Safety
    ///
    /// Every element written through it is inside the buffer, and no other
    /// task reads or writes it meanwhile.
    ///
    /// # Panics
    ///
    /// When `start` is outside the buffer.
    pub unsafe fn ptr(&self, start: usize) -> *mut f32 {
        assert!(
            start < self.len,
            "{start} is outside a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (checked above).
        unsafe { self.ptr.add(start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_dot_products() {
        let (n, k, m) = (3, 37, 4);
        let input: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.1).collect();
        let weight: Vec<f32> = (0..m * k).map(|i| 1.0 - i as f32 * 0.05).collect();
        for parallel in [false, true] {
            let mut out = vec![1.0; n * m];
            matmul(&input, n, k, &weight, m, &mut out, true, parallel);
            for r in 0..n {
                for c in 0..m {
                    let expected =
                        1.0 + dot(&input[r * k..(r + 1) * k], &weight[c * k..(c + 1) * k]);
                    let got = out[r * m + c];
                    assert!(
                        (got - expected).abs() <= 1e-4 * expected.abs(),
                        "{got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn dot_is_the_same_with_and_without_avx2() {
        for len in [0, 1, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7) % 13) as f32 * 0.37 - 2.1)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 5) % 11) as f32 * 0.71 - 3.3)
                .collect();
            assert_eq!(
                dot(&a, &b).to_bits(),
                dot_inlined(&a, &b).to_bits(),
                "length {len}"
            );
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - exact).abs() < 1e-3, "length {len}");
        }
    }

    #[test]
    #[should_panic(expected = "outside a buffer")]
    fn a_slice_outside_the_buffer_panics() {
        let mut out = vec![0f32; 4];
        let shared = DisjointWrites::new(&mut out);
        // SAFETY: nothing else uses the buffer; the call panics before any access.
        let _ = unsafe { shared.slice(3, 2) };
    }
}
