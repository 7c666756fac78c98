//! The ggml weight types the kernels read, block by block.
//!
//! Every type is, per block of 32 columns of a row, unsigned integers `q`
//! of a few bits (signed bytes for Q8_0) with integer sub-scales and
//! minimums, under one or two f16 factors per super-block. [`RowBlock`] is
//! that common form; each ggml type decodes into it ([`legacy`] for the
//! 32-value blocks, [`kquants`] for the 256-value super-blocks) and the
//! tiles ([`crate::PackedMatrix`]) are packed from it.

pub(crate) mod kquants;
pub(crate) mod legacy;

use crate::acts::Scheme;

/// Values per block of the activations' and the kernels' inner loops.
pub const BLOCK: usize = 32;

/// A ggml weight type with an integer kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Format {
    /// `d·(q − 8)`, 4-bit `q`, blocks of 32.
    Q4_0,
    /// `d·q + m`, 4-bit `q`, blocks of 32.
    Q4_1,
    /// `d·(q − 16)`, 5-bit `q`, blocks of 32.
    Q5_0,
    /// `d·q + m`, 5-bit `q`, blocks of 32.
    Q5_1,
    /// `d·q`, signed 8-bit `q`, blocks of 32.
    Q8_0,
    /// `d·s·q − dmin·m`, 2-bit `q`, 4-bit `s` and `m` per 16 values,
    /// super-blocks of 256.
    Q2_K,
    /// `d·(s − 32)·(q − 4)`, 3-bit `q`, 6-bit `s` per 16 values,
    /// super-blocks of 256.
    Q3_K,
    /// `d·s·q − dmin·m`, 4-bit `q`, 6-bit `s` and `m` per 32 values,
    /// super-blocks of 256.
    Q4_K,
    /// `d·s·q − dmin·m`, 5-bit `q`, 6-bit `s` and `m` per 32 values,
    /// super-blocks of 256.
    Q5_K,
    /// `d·s·(q − 32)`, 6-bit `q`, signed 8-bit `s` per 16 values,
    /// super-blocks of 256.
    Q6_K,
}

/// How a format's minimums enter a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mins {
    /// None.
    None,
    /// `+ b·Σx` per block (Q4_1, Q5_1: `b` is the block's `m`).
    Sum,
    /// `− b·Σ m_g·Σx_g` per super-block (K-quants: `b` is `dmin`, `m_g`
    /// the group's integer minimum).
    Groups,
}

/// A format's shape, as the packer and the kernels see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Blocks of 32 per super-block (1 or 8).
    pub(crate) blocks: usize,
    /// Bits of `q` in the low part (8, 4 or 2).
    pub(crate) low: u32,
    /// Bits of `q` in the high part (0, 1 or 2).
    pub(crate) high: u32,
    /// `q` is a signed byte (Q8_0).
    pub(crate) signed: bool,
    /// Subtracted from `q` before scaling.
    pub(crate) offset: i32,
    /// Integer sub-scales per block of 32: 0 (none), 1 or 2 (one per 16).
    pub(crate) groups: usize,
    /// How the minimums enter.
    pub(crate) mins: Mins,
}

impl Layout {
    /// Bytes of the f16 factors at the head of a super-block record.
    pub(crate) const fn header(&self) -> usize {
        match self.mins {
            Mins::None => 32,
            _ => 64,
        }
    }

    /// Bytes of one block of 32 columns × 16 rows in a record.
    pub(crate) const fn body(&self) -> usize {
        let mins = match self.mins {
            Mins::Groups => self.groups * 16,
            _ => 0,
        };
        (self.low + self.high) as usize * 64 + self.groups * 16 + mins
    }

    /// Bytes of one super-block × 16 rows.
    pub(crate) const fn record(&self) -> usize {
        self.header() + self.blocks * self.body()
    }

    /// The largest `q` (unsigned formats).
    pub(crate) const fn max_q(&self) -> i32 {
        (1 << (self.low + self.high)) - 1
    }
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 10] = [
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q8_0,
        Format::Q2_K,
        Format::Q3_K,
        Format::Q4_K,
        Format::Q5_K,
        Format::Q6_K,
    ];

    /// The format of ggml type number `id` (as GGUF files store it).
    pub fn from_ggml_type(id: u32) -> Option<Format> {
        Some(match id {
            2 => Format::Q4_0,
            3 => Format::Q4_1,
            6 => Format::Q5_0,
            7 => Format::Q5_1,
            8 => Format::Q8_0,
            10 => Format::Q2_K,
            11 => Format::Q3_K,
            12 => Format::Q4_K,
            13 => Format::Q5_K,
            14 => Format::Q6_K,
            _ => return None,
        })
    }

    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Format::Q4_0 => "Q4_0",
            Format::Q4_1 => "Q4_1",
            Format::Q5_0 => "Q5_0",
            Format::Q5_1 => "Q5_1",
            Format::Q8_0 => "Q8_0",
            Format::Q2_K => "Q2_K",
            Format::Q3_K => "Q3_K",
            Format::Q4_K => "Q4_K",
            Format::Q5_K => "Q5_K",
            Format::Q6_K => "Q6_K",
        }
    }

    /// Values in one ggml block (32, or 256 for the K-quants).
    pub fn block_values(self) -> usize {
        self.layout().blocks * BLOCK
    }

    /// Bytes of one ggml block.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
            Format::Q2_K => 84,
            Format::Q3_K => 110,
            Format::Q4_K => 144,
            Format::Q5_K => 176,
            Format::Q6_K => 210,
        }
    }

    /// How activations are quantized for a product with this format: per
    /// 32 values as ggml's Q8_0 for the 32-value blocks, per 256 as ggml's
    /// Q8_K for the K-quants.
    pub fn scheme(self) -> Scheme {
        if self.layout().blocks == 1 {
            Scheme::Q8_0
        } else {
            Scheme::Q8_K
        }
    }

    pub(crate) const fn layout(self) -> Layout {
        const fn small(low: u32, high: u32, offset: i32, mins: Mins) -> Layout {
            Layout {
                blocks: 1,
                low,
                high,
                signed: false,
                offset,
                groups: 0,
                mins,
            }
        }
        const fn k(low: u32, high: u32, offset: i32, groups: usize, mins: Mins) -> Layout {
            Layout {
                blocks: 8,
                low,
                high,
                signed: false,
                offset,
                groups,
                mins,
            }
        }
        match self {
            Format::Q4_0 => small(4, 0, 8, Mins::None),
            Format::Q4_1 => small(4, 0, 0, Mins::Sum),
            Format::Q5_0 => small(4, 1, 16, Mins::None),
            Format::Q5_1 => small(4, 1, 0, Mins::Sum),
            Format::Q8_0 => Layout {
                signed: true,
                ..small(8, 0, 0, Mins::None)
            },
            Format::Q2_K => k(2, 0, 0, 2, Mins::Groups),
            Format::Q3_K => k(2, 1, 4, 2, Mins::None),
            Format::Q4_K => k(4, 0, 0, 1, Mins::Groups),
            Format::Q5_K => k(4, 1, 0, 1, Mins::Groups),
            Format::Q6_K => k(4, 2, 32, 2, Mins::None),
        }
    }

    /// One ggml block of one row in the common form.
    pub(crate) fn decode(self, bytes: &[u8]) -> RowBlock {
        match self {
            Format::Q4_0 => legacy::q4_0(bytes),
            Format::Q4_1 => legacy::q4_1(bytes),
            Format::Q5_0 => legacy::q5_0(bytes),
            Format::Q5_1 => legacy::q5_1(bytes),
            Format::Q8_0 => legacy::q8_0(bytes),
            Format::Q2_K => kquants::q2_k(bytes),
            Format::Q3_K => kquants::q3_k(bytes),
            Format::Q4_K => kquants::q4_k(bytes),
            Format::Q5_K => kquants::q5_k(bytes),
            Format::Q6_K => kquants::q6_k(bytes),
        }
    }

    /// The values of `block`, as ggml dequantizes them (the same arithmetic,
    /// so the same f32s).
    pub(crate) fn dequantize(self, block: &RowBlock, out: &mut [f32]) {
        let d = half::f16::from_bits(block.a).to_f32();
        let b = half::f16::from_bits(block.b).to_f32();
        let n = self.block_values();
        for (c, out) in out[..n].iter_mut().enumerate() {
            let q = i32::from(block.q[c]);
            let s = f32::from(block.scales[c / 16]);
            let m = f32::from(block.mins[c / 16]);
            *out = match self {
                Format::Q4_0 => (q - 8) as f32 * d,
                Format::Q5_0 => (q - 16) as f32 * d,
                Format::Q4_1 | Format::Q5_1 => q as f32 * d + b,
                Format::Q8_0 => f32::from(block.q[c] as i8) * d,
                Format::Q2_K | Format::Q4_K | Format::Q5_K => (d * s) * q as f32 - b * m,
                Format::Q3_K | Format::Q6_K => (d * s) * (q - self.layout().offset) as f32,
            };
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantizes ggml blocks of `format` from `bytes` into `out`, exactly as
/// ggml does: as many whole blocks as both hold.
///
/// ```
/// use kb_kernels::{Format, dequantize};
///
/// // A Q4_0 block: d = 0.5 (f16 0x3800), every nibble 10 → 0.5·(10 − 8).
/// let mut block = 0x3800u16.to_le_bytes().to_vec();
/// block.extend([0xaa; 16]);
/// let mut out = [0f32; 32];
/// dequantize(Format::Q4_0, &block, &mut out);
/// assert_eq!(out, [1.0; 32]);
/// ```
pub fn dequantize(format: Format, bytes: &[u8], out: &mut [f32]) {
    let (size, values) = (format.block_bytes(), format.block_values());
    for (block, out) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(values)) {
        format.dequantize(&format.decode(block), out);
    }
}

/// One ggml block (32 values, or a super-block of 256) of one row in the
/// common form.
#[derive(Debug, Clone)]
pub(crate) struct RowBlock {
    /// The f16 scale (`d`), as bits.
    pub(crate) a: u16,
    /// The f16 minimum (`m`) or minimums' scale (`dmin`), as bits; 0 when
    /// the format has none.
    pub(crate) b: u16,
    /// The quants, unsigned (Q8_0: the signed byte's bits).
    pub(crate) q: [u8; 256],
    /// Integer sub-scale per 16 values (1 where the format has none).
    pub(crate) scales: [i8; 16],
    /// Integer minimum per 16 values (0 where the format has none).
    pub(crate) mins: [u8; 16],
}

impl Default for RowBlock {
    fn default() -> Self {
        RowBlock {
            a: 0,
            b: 0,
            q: [0; 256],
            scales: [1; 16],
            mins: [0; 16],
        }
    }
}

/// An f16 stored little-endian at `bytes[at..at + 2]`, as bits.
pub(crate) fn half_bits(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
