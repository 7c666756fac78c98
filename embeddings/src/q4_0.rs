//! ggml's Q4_0 block format: 32 weights in 18 bytes (an f16 scale, then 16
//! bytes of 4-bit values), dequantised as `d · (q − 8)`.

/// Weights per block.
pub(crate) const BLOCK: usize = 32;
/// Bytes per block.
pub(crate) const BLOCK_BYTES: usize = 18;

/// IEEE 754 half precision to single precision.
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the mantissa.
            let shift = mantissa.leading_zeros() - 21;
            let mantissa = (mantissa << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (mantissa << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mantissa << 13),
        _ => sign | ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(value)
}

/// Dequantises whole blocks from `bytes` into `out` (`out.len()` must be
/// `bytes.len() / 18 · 32`).
pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (block, values) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        for (j, &q) in block[2..].iter().enumerate() {
            values[j] = d * ((q & 0x0f) as f32 - 8.0);
            values[j + 16] = d * ((q >> 4) as f32 - 8.0);
        }
    }
}

/// Each block of `bytes` as `(d, m, qs)`, the weight `d·q + m` with
/// `m = −8d` and the nibbles as stored.
pub(crate) fn blocks(bytes: &[u8]) -> impl Iterator<Item = (f32, f32, [u8; BLOCK / 2])> + '_ {
    bytes.chunks_exact(BLOCK_BYTES).map(|block| {
        let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
        let mut qs = [0u8; BLOCK / 2];
        qs.copy_from_slice(&block[2..]);
        (d, -8.0 * d, qs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x8000), -0.0);
    }

    #[test]
    fn blocks_dequantise_low_nibbles_first() {
        let mut block = [0u8; 18];
        block[..2].copy_from_slice(&0x3800u16.to_le_bytes()); // d = 0.5
        block[2] = 0xf0; // weight 0: 0 - 8, weight 16: 15 - 8
        let mut out = [0f32; 32];
        dequantize(&block, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[1], -4.0);
    }
}
