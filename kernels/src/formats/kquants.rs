//! ggml's K-quants (super-blocks of 256 values) in the common form.
//!
//! Within a super-block the quants run in groups of 32 consecutive bytes,
//! each byte carrying values 32 apart in its bit fields (low nibble, then
//! high nibble; or four 2-bit fields); high bits are spread the same way
//! over a separate array. Sub-scales (and minimums) are integers under the
//! super-block's f16 `d` (and `dmin`).

use super::{RowBlock, half_bits};

/// The 6-bit scale and minimum of sub-block `j` (of 8) from the 12 packed
/// bytes of Q4_K and Q5_K.
fn scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// `scales[16]` (4-bit scale, 4-bit minimum), `qs[64]` (2 bits), `d`, `dmin`.
pub(crate) fn q2_k(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 80),
        b: half_bits(bytes, 82),
        ..RowBlock::default()
    };
    for (g, &s) in bytes[..16].iter().enumerate() {
        block.scales[g] = (s & 0x0f) as i8;
        block.mins[g] = s >> 4;
    }
    let qs = &bytes[16..80];
    // Two halves of 128 values; in each, field `f` of the 32 bytes holds
    // values 32·f + l.
    for half in 0..2 {
        for f in 0..4 {
            for l in 0..32 {
                block.q[half * 128 + f * 32 + l] = (qs[half * 32 + l] >> (2 * f)) & 3;
            }
        }
    }
    block
}

/// `hmask[32]`, `qs[64]` (2 bits), `scales[12]` (6 bits, packed), `d`.
pub(crate) fn q3_k(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 108),
        ..RowBlock::default()
    };
    let (hmask, qs, packed) = (&bytes[..32], &bytes[32..96], &bytes[96..108]);
    // 16 six-bit scales: the low four bits from bytes 0..8 (two per byte),
    // the high two from bytes 8..12 (four per byte).
    for (g, scale) in block.scales.iter_mut().enumerate() {
        let low = (packed[g % 8] >> (4 * (g / 8))) & 0x0f;
        let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
        *scale = ((low | (high << 4)) as i8) - 32;
    }
    for half in 0..2 {
        for f in 0..4 {
            for l in 0..32 {
                let c = half * 128 + f * 32 + l;
                let low = (qs[half * 32 + l] >> (2 * f)) & 3;
                let high = (hmask[l] >> (half * 4 + f)) & 1;
                block.q[c] = low | (high << 2);
            }
        }
    }
    block
}

/// `d`, `dmin`, `scales[12]` (6-bit scales and minimums), `qs[128]`.
pub(crate) fn q4_k(bytes: &[u8]) -> RowBlock {
    let mut block = q4_k_like(bytes);
    let qs = &bytes[16..144];
    // Four groups of 64 values: 32 bytes, low nibbles then high nibbles.
    for g in 0..4 {
        for l in 0..32 {
            let byte = qs[g * 32 + l];
            block.q[g * 64 + l] = byte & 0x0f;
            block.q[g * 64 + 32 + l] = byte >> 4;
        }
    }
    block
}

/// `d`, `dmin`, `scales[12]`, `qh[32]` (fifth bits), `qs[128]`.
pub(crate) fn q5_k(bytes: &[u8]) -> RowBlock {
    let mut block = q4_k_like(bytes);
    let (qh, qs) = (&bytes[16..48], &bytes[48..176]);
    for g in 0..4 {
        for l in 0..32 {
            let byte = qs[g * 32 + l];
            let (lo, hi) = ((qh[l] >> (2 * g)) & 1, (qh[l] >> (2 * g + 1)) & 1);
            block.q[g * 64 + l] = (byte & 0x0f) | (lo << 4);
            block.q[g * 64 + 32 + l] = (byte >> 4) | (hi << 4);
        }
    }
    block
}

/// The factors and 6-bit scales of Q4_K and Q5_K (same first 16 bytes).
fn q4_k_like(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 0),
        b: half_bits(bytes, 2),
        ..RowBlock::default()
    };
    for j in 0..8 {
        let (s, m) = scale_min(j, &bytes[4..16]);
        block.scales[2 * j] = s as i8;
        block.scales[2 * j + 1] = s as i8;
        block.mins[2 * j] = m;
        block.mins[2 * j + 1] = m;
    }
    block
}

/// `ql[128]` (low nibbles), `qh[64]` (2 high bits), `scales[16]` (i8), `d`.
pub(crate) fn q6_k(bytes: &[u8]) -> RowBlock {
    let mut block = RowBlock {
        a: half_bits(bytes, 208),
        ..RowBlock::default()
    };
    let (ql, qh, scales) = (&bytes[..128], &bytes[128..192], &bytes[192..208]);
    for (g, s) in block.scales.iter_mut().enumerate() {
        *s = scales[g] as i8;
    }
    // Two halves of 128 values, each from 64 low-nibble bytes and 32 bytes
    // of high bits: value l + 32·f takes field f.
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
        for l in 0..32 {
            let c = half * 128 + l;
            block.q[c] = (ql[l] & 0x0f) | (((qh[l]) & 3) << 4);
            block.q[c + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            block.q[c + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            block.q[c + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    block
}
