//! [`multiply`]: the checked, parallel entry to the integer product.

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
    if !isa.is_supported() {
        return Err(Error::UnsupportedIsa {
            asked: isa.name(),
            available: Isa::best().name().to_string(),
        });
    }
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
    let (n, rows) = (x.rows(), w.rows());
    if out.len() != n * rows {
        return Err(Error::Shape(format!(
            "an output of {} values for {n} × {rows}",
            out.len()
        )));
    }
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let tiles = rows.div_ceil(TILE);
    let threads = rayon::current_num_threads();
    let chunk = tiles.div_ceil(threads * 4).clamp(1, 32);
    let (q, d, s, sums) = x.parts();
    let base = OutPtr(out.as_mut_ptr());
    let run = |first: usize| {
        let end = (first + chunk).min(tiles);
        let problem = Problem {
            data: w.data(),
            superblocks: w.superblocks(),
            rows,
            k: w.cols(),
            q,
            d,
            s,
            sums,
            tokens: 0..n,
            tiles: first..end,
            // SAFETY: tile `first` starts at row 16·first < rows.
            out: unsafe { base.get().add(first * TILE) },
            stride: rows,
            add,
        };
        kernel::run(isa, w.format(), &problem);
    };
    let starts: Vec<usize> = (0..tiles).step_by(chunk).collect();
    if starts.len() == 1 || threads == 1 {
        starts.into_iter().for_each(run);
    } else {
        starts.into_par_iter().for_each(run);
    }
    Ok(())
}

/// The output's start, shared by tasks that write disjoint rows of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: each task writes only the rows of its own tiles (see `multiply`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
