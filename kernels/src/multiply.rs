//! [`multiply`] and [`multiply_many`]: the checked, parallel entries to the
//! integer product.

use rayon::prelude::*;

use crate::acts::Activations;
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::kernel::{self, Problem};
use crate::packed::{PackedMatrix, TILE};

/// `out[t·rows + r] = x[t] · w[r]` for every activation row `t` and weight
/// row `r` (or `+=` with `add`), the weight rows split over the current
/// rayon pool.
///
/// Each output is computed alone, in a fixed order, with the same integer
/// sums and f32 operations on every instruction set: the result does not
/// depend on `isa`, on the other rows of `x`, or on the thread count.
///
/// ```
/// use kb_kernels::{Activations, Format, Isa, PackedMatrix, multiply};
///
/// // One Q8_0 row of 32 ones (d = 1.0, f16 0x3c00).
/// let mut bytes = 0x3c00u16.to_le_bytes().to_vec();
/// bytes.extend([1u8; 32]);
/// let w = PackedMatrix::from_ggml(Format::Q8_0, 1, 32, &bytes)?;
/// let mut x = Activations::new(w.format().scheme());
/// x.quantize(&[0.5; 32], 32, Isa::best())?;
/// let mut out = [0f32];
/// multiply(Isa::best(), &w, &x, &mut out, false)?;
/// assert!((out[0] - 16.0).abs() < 1e-3);
/// # Ok::<(), kb_kernels::Error>(())
/// ```
pub fn multiply(
    isa: Isa,
    w: &PackedMatrix,
    x: &Activations,
    out: &mut [f32],
    add: bool,
) -> Result<()> {
    multiply_many(isa, &mut [Product { w, x, out, add }])
}

/// One product of [`multiply_many`]: `out (=|+=) x · wᵀ`.
#[derive(Debug)]
pub struct Product<'a> {
    /// The weights.
    pub w: &'a PackedMatrix,
    /// The activations, quantized with the weights' scheme.
    pub x: &'a Activations,
    /// `x.rows() × w.rows()` results.
    pub out: &'a mut [f32],
    /// Add to `out` instead of overwriting it.
    pub add: bool,
}

/// Several products (the query, key and value of one input, say) in one
/// parallel pass over the pool: the same numbers as one [`multiply`] each,
/// with one wait for the threads instead of one per matrix.
pub fn multiply_many(isa: Isa, products: &mut [Product<'_>]) -> Result<()> {
    if !isa.is_supported() {
        return Err(Error::UnsupportedIsa {
            asked: isa.name(),
            available: Isa::best().name().to_string(),
        });
    }
    for Product { w, x, out, .. } in products.iter() {
        check(w, x, out.len())?;
    }
    let threads = rayon::current_num_threads();
    // (product, first tile, last tile) per task.
    let mut tasks = Vec::new();
    for (i, Product { w, x, .. }) in products.iter().enumerate() {
        if x.rows() == 0 || w.rows() == 0 {
            continue;
        }
        let tiles = w.rows().div_ceil(TILE);
        let chunk = tiles.div_ceil(threads * 4).clamp(1, 32);
        tasks.extend(
            (0..tiles)
                .step_by(chunk)
                .map(|first| (i, first, (first + chunk).min(tiles))),
        );
    }
    let outputs: Vec<OutPtr> = products
        .iter_mut()
        .map(|p| OutPtr(p.out.as_mut_ptr()))
        .collect();
    let run = |&(i, first, end): &(usize, usize, usize)| {
        let Product { w, x, add, .. } = &products[i];
        let (q, d, s, sums) = x.parts();
        let problem = Problem {
            data: w.data(),
            superblocks: w.superblocks(),
            rows: w.rows(),
            k: w.cols(),
            q,
            d,
            s,
            sums,
            tokens: 0..x.rows(),
            tiles: first..end,
            // SAFETY: tile `first` starts at row 16·first < rows, inside
            // the checked output.
            out: unsafe { outputs[i].get().add(first * TILE) },
            stride: w.rows(),
            add: *add,
        };
        kernel::run(isa, w.format(), &problem);
    };
    if tasks.len() == 1 || threads == 1 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
    Ok(())
}

/// Checks that `x · wᵀ` fits an output of `len` values.
fn check(w: &PackedMatrix, x: &Activations, len: usize) -> Result<()> {
    if x.scheme() != w.format().scheme() {
        return Err(Error::Shape(format!(
            "{} weights take {:?} activations, not {:?}",
            w.format(),
            w.format().scheme(),
            x.scheme()
        )));
    }
    if x.k() != w.cols() {
        return Err(Error::Shape(format!(
            "activations of {} values against weight rows of {}",
            x.k(),
            w.cols()
        )));
    }
    if len != x.rows() * w.rows() {
        return Err(Error::Shape(format!(
            "an output of {len} values for {} × {}",
            x.rows(),
            w.rows()
        )));
    }
    Ok(())
}

/// An output's start, shared by tasks that write disjoint rows of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: each task writes only the rows of its own tiles (see
// `multiply_many`), and the outputs are distinct `&mut` slices.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
