//! The kernel, written once over [`Simd`].
//!
//! For a tile of 16 weight rows and a few activation rows (tokens), per
//! super-block: each block of 32 columns is unpacked into 8 lines of
//! unsigned weights; per token and per group of lines, the exact integer
//! dot product of the weights with the activation bytes, less the format's
//! offset times the activations' sum, times the group's integer sub-scale,
//! is added up in i32 (as are the minimums' integer share). Per super-block
//! and token, the f32 part is then always the same three or six operations:
//!
//! `acc = acc + (a·dx)·I`, and where the format has minimums
//! `acc_min = acc_min ± (b·dx)·M` (for Q4_1 and Q5_1 `acc_min + b·s`, with
//! ggml's f16-rounded `s = dx·Σq`), the two added at the end as llama.cpp
//! adds them.
//!
//! (`a`, `b` the rows' f16 factors, `dx` the activations' scale). So each
//! output depends only on its row and its token, never on the tokens or rows
//! computed beside it, and every instruction set gives the same bits.

use std::ops::Range;

use super::simd::Simd;
use crate::formats::{BLOCK, Format, Layout, Mins};
use crate::packed::TILE;

/// Tokens per call of the micro-kernel.
pub(crate) const TOKENS: usize = 4;

/// A checked product: weights, activations, which tiles and tokens, and
/// where the results go.
pub(crate) struct Problem<'a> {
    /// The packed weights.
    pub(crate) data: &'a [u8],
    /// Super-blocks per weight row.
    pub(crate) superblocks: usize,
    /// Weight rows (the last tile may be padded past them).
    pub(crate) rows: usize,
    /// Values per row.
    pub(crate) k: usize,
    /// The activations: quants, scales, sums per 16.
    pub(crate) q: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    pub(crate) sums: &'a [i32],
    /// Activation rows to multiply.
    pub(crate) tokens: Range<usize>,
    /// Weight tiles to multiply.
    pub(crate) tiles: Range<usize>,
    /// Output `(t, r)` at `out[(t − tokens.start)·stride + r − 16·tiles.start]`.
    pub(crate) out: *mut f32,
    pub(crate) stride: usize,
    /// Add to the output instead of overwriting it.
    pub(crate) add: bool,
}

/// A format known at compile time.
pub(crate) trait Fmt {
    const LAYOUT: Layout;
}

macro_rules! formats {
    ($($name:ident),*) => {
        /// One type per [`Format`], for monomorphising the kernel.
        #[allow(non_camel_case_types)]
        pub(crate) mod fmt {
            use super::{Fmt, Format, Layout};
            $(
                pub(crate) struct $name;
                impl Fmt for $name {
                    const LAYOUT: Layout = Format::$name.layout();
                }
            )*
        }
    };
}
formats!(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K);

/// Calls `$run::<fmt::X>($problem)` for `$format`.
macro_rules! dispatch {
    ($format:expr, $run:ident, $problem:expr) => {{
        use $crate::formats::Format;
        use $crate::kernel::body::fmt;
        match $format {
            Format::Q4_0 => $run::<fmt::Q4_0>($problem),
            Format::Q4_1 => $run::<fmt::Q4_1>($problem),
            Format::Q5_0 => $run::<fmt::Q5_0>($problem),
            Format::Q5_1 => $run::<fmt::Q5_1>($problem),
            Format::Q8_0 => $run::<fmt::Q8_0>($problem),
            Format::Q2_K => $run::<fmt::Q2_K>($problem),
            Format::Q3_K => $run::<fmt::Q3_K>($problem),
            Format::Q4_K => $run::<fmt::Q4_K>($problem),
            Format::Q5_K => $run::<fmt::Q5_K>($problem),
            Format::Q6_K => $run::<fmt::Q6_K>($problem),
        }
    }};
}
pub(crate) use dispatch;

/// Every tile of `p` against every token, `TOKENS` tokens at a time, in
/// blocks of [`TOKEN_BLOCK`] tokens: the block's activations and outputs
/// stay in cache while the tiles stream past (walking every token per tile
/// instead misses the cache on each output of a long input).
///
/// # Safety
/// `p` must be consistent: its ranges inside the weights, the activations
/// and the output.
#[inline(always)]
pub(crate) unsafe fn run_tiles<S: Simd, F: Fmt>(p: &Problem<'_>) {
    let mut start = p.tokens.start;
    while start < p.tokens.end {
        let end = (start + TOKEN_BLOCK).min(p.tokens.end);
        for tile in p.tiles.clone() {
            let mut t = start;
            while t + TOKENS <= end {
                // SAFETY: the caller's promise covers these tokens and this tile.
                unsafe { micro::<S, F, TOKENS>(p, tile, t) };
                t += TOKENS;
            }
            while t < end {
                // SAFETY: as above.
                unsafe { micro::<S, F, 1>(p, tile, t) };
                t += 1;
            }
        }
        start = end;
    }
}

/// Tokens per block of [`run_tiles`]. Each output depends only on its row
/// and token, so the order of the blocks changes no bit.
const TOKEN_BLOCK: usize = 64;

/// Tokens `t0..t0 + T` against tile `tile`.
#[inline(always)]
unsafe fn micro<S: Simd, F: Fmt, const T: usize>(p: &Problem<'_>, tile: usize, t0: usize) {
    let l = F::LAYOUT;
    let (nl, nh) = (l.low as usize, l.high as usize);
    let low_mask = ((1u32 << l.low) - 1) as u8;
    let high_mask = ((1u32 << l.high) - 1) as u8;
    let groups = l.groups.max(1);
    let per_group = BLOCK / 4 / groups;
    let per16 = if l.signed {
        1
    } else {
        (32_767 / (2 * l.max_q() * 127)).clamp(1, 8) as usize
    };
    let scales_per_row = p.k / (l.blocks * BLOCK);
    let base = p.data.as_ptr();
    // Both halves of a tile (for 8-lane vectors) in one pass over its
    // records, so the weights stream from memory once, without a second
    // pass over cached data in between.
    let halves = TILE / S::LANES;
    // The scales' and the minimums' shares apart, added at the end (as
    // llama.cpp does: they nearly cancel).
    let mut acc = [[S::splat_f(0.0); 2]; T];
    let mut acc_min = [[S::splat_f(0.0); 2]; T];
    for s in 0..p.superblocks {
        for h in 0..halves {
            let lanes = h * S::LANES;
            // SAFETY (every pointer below): the record of (tile, s) lies in
            // the packed data, the activations of tokens t0..t0 + T in
            // theirs, as the caller promised.
            let record = unsafe { base.add((tile * p.superblocks + s) * l.record()) };
            let a = unsafe { S::load_f16(record.add(2 * lanes)) };
            let b = match l.mins {
                Mins::None => a,
                _ => unsafe { S::load_f16(record.add(32 + 2 * lanes)) },
            };
            let mut isum = [S::splat_i(0); T];
            let mut msum = [S::splat_i(0); T];
            for j in 0..l.blocks {
                let body = unsafe { record.add(l.header() + j * l.body()) };
                // No closures here: they would not inherit the instruction
                // set of the function this is compiled into.
                let mut lines = [S::zero_b(); 8];
                for (line, slot) in lines.iter_mut().enumerate() {
                    let (v, shift) = (line % nl, l.low * (line / nl) as u32);
                    let raw = unsafe { S::load_b(body.add(v * 64 + 4 * lanes)) };
                    let mut w = if l.low == 8 {
                        raw
                    } else {
                        S::field(raw, shift, low_mask)
                    };
                    if nh > 0 {
                        let (hv, hshift) = (line % nh, l.high * (line / nh) as u32);
                        let high = unsafe { S::load_b(body.add((nl + hv) * 64 + 4 * lanes)) };
                        w = S::merge(w, S::field(high, hshift, high_mask), l.low);
                    }
                    *slot = if l.signed { S::signed(w) } else { w };
                }
                let extra = unsafe { body.add((nl + nh) * 64) };
                let mut scales = [S::splat_i(1); 2];
                let mut mins = [S::splat_i(0); 2];
                for g in 0..l.groups {
                    scales[g] = unsafe { S::load_i8(extra.add(16 * g + lanes)) };
                    if l.mins == Mins::Groups {
                        mins[g] = unsafe { S::load_u8(extra.add(16 * (l.groups + g) + lanes)) };
                    }
                }
                let block = s * l.blocks + j;
                for t in 0..T {
                    let at = (t0 + t) * p.k + block * BLOCK;
                    let xq = unsafe { p.q.as_ptr().add(at) };
                    let mut x4 = [0i32; 8];
                    for (n, x) in x4.iter_mut().enumerate() {
                        *x = unsafe { xq.add(4 * n).cast::<i32>().read_unaligned() };
                    }
                    let (s0, s1) = unsafe {
                        let sums = p.sums.as_ptr().add(at / 16);
                        (*sums, *sums.add(1))
                    };
                    for g in 0..groups {
                        let range = g * per_group..(g + 1) * per_group;
                        let mut dot = if l.signed {
                            S::dots_signed(&lines[range.clone()], &x4[range])
                        } else {
                            S::dots(&lines[range.clone()], &x4[range], per16)
                        };
                        let sum = match (groups, g) {
                            (1, _) => s0 + s1,
                            (_, 0) => s0,
                            _ => s1,
                        };
                        let offset = if l.signed { S::SIGNED_BIAS } else { l.offset };
                        if offset != 0 {
                            dot = S::sub_i(dot, S::splat_i(offset * sum));
                        }
                        if l.groups > 0 {
                            dot = S::mul_i(dot, scales[g]);
                        }
                        isum[t] = S::add_i(isum[t], dot);
                        if l.mins == Mins::Groups {
                            msum[t] = S::add_i(msum[t], S::mul_i(mins[g], S::splat_i(sum)));
                        }
                    }
                }
            }
            for t in 0..T {
                let dx = S::splat_f(unsafe { *p.d.as_ptr().add((t0 + t) * scales_per_row + s) });
                let acc = &mut acc[t][h];
                *acc = S::add_f(*acc, S::mul_f(S::mul_f(a, dx), S::to_f(isum[t])));
                let acc_min = &mut acc_min[t][h];
                match l.mins {
                    Mins::None => {}
                    Mins::Sum => {
                        // ggml's Q8_1 `s`, f16-rounded: llama.cpp's numbers.
                        let sx = unsafe { *p.s.as_ptr().add((t0 + t) * scales_per_row + s) };
                        *acc_min = S::add_f(*acc_min, S::mul_f(b, S::splat_f(sx)));
                    }
                    Mins::Groups => {
                        let m = S::mul_f(S::mul_f(b, dx), S::to_f(msum[t]));
                        *acc_min = S::sub_f(*acc_min, m);
                    }
                }
            }
        }
    }
    for h in 0..halves {
        let first = tile * TILE + h * S::LANES;
        let n = p.rows.saturating_sub(first).min(S::LANES);
        if n == 0 {
            continue;
        }
        for (t, (acc, acc_min)) in acc.iter().zip(&acc_min).enumerate() {
            let at = (t0 + t - p.tokens.start) * p.stride + first - p.tiles.start * TILE;
            let total = match l.mins {
                Mins::None => acc[h],
                _ => S::add_f(acc[h], acc_min[h]),
            };
            // SAFETY: the output holds row `first + n − 1` of every token.
            unsafe { S::store_f(p.out.add(at), total, n, p.add) };
        }
    }
}
