//! ggml's blocks of 32 values (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) in the common
//! form. In each, byte `j` of the nibbles holds value `j` in its low half
//! and value `j + 16` in its high half; the fifth bits of Q5 sit in one
//! little-endian u32, bit `j` for value `j`.

use super::{RowBlock, half_bits};

/// The 32 values of 16 nibble bytes.
fn nibbles(qs: &[u8], q: &mut [u8]) {
    for (j, &byte) in qs[..16].iter().enumerate() {
        q[j] = byte & 0x0f;
        q[j + 16] = byte >> 4;
    }
}

/// Adds the fifth bits of `qh` (bit `j` for value `j`).
fn fifth_bits(qh: &[u8], q: &mut [u8]) {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, v) in q[..32].iter_mut().enumerate() {
        *v |= (((bits >> j) & 1) as u8) << 4;
    }
}

/// `d` (f16), 16 nibble bytes.
pub(crate) fn q4_0(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        ..RowBlock::default()
    };
    nibbles(&bytes[2..18], &mut block.q);
    block
}

/// `d`, `m` (f16), 16 nibble bytes.
pub(crate) fn q4_1(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        b: half_bits(bytes, 2),
        ..RowBlock::default()
    };
    nibbles(&bytes[4..20], &mut block.q);
    block
}

/// `d` (f16), the fifth bits (4 bytes), 16 nibble bytes.
pub(crate) fn q5_0(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        ..RowBlock::default()
    };
    nibbles(&bytes[6..22], &mut block.q);
    fifth_bits(&bytes[2..6], &mut block.q);
    block
}

/// `d`, `m` (f16), the fifth bits, 16 nibble bytes.
pub(crate) fn q5_1(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        b: half_bits(bytes, 2),
        ..RowBlock::default()
    };
    nibbles(&bytes[8..24], &mut block.q);
    fifth_bits(&bytes[4..8], &mut block.q);
    block
}

/// `d` (f16), 32 signed bytes.
pub(crate) fn q8_0(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        ..RowBlock::default()
    };
    block.q[..32].copy_from_slice(&bytes[2..34]);
    block
}
