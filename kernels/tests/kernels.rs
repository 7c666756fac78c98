//! The kernels against independent references: candle's ggml
//! dequantization for the packing, an f64 product of the dequantized values
//! for the arithmetic, and the plain-Rust kernels, bit for bit, for every
//! instruction set this processor has (the scalar ones always run).

use candle_core::quantized::{GgmlDType, ggml_file::qtensor_from_ggml};
use candle_core::{Device, Tensor};
use kb_kernels::{Activations, Format, Isa, PackedMatrix, multiply};

/// A deterministic stream of pseudo-random numbers.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

fn candle_type(format: Format) -> GgmlDType {
    match format {
        Format::Q4_0 => GgmlDType::Q4_0,
        Format::Q4_1 => GgmlDType::Q4_1,
        Format::Q5_0 => GgmlDType::Q5_0,
        Format::Q5_1 => GgmlDType::Q5_1,
        Format::Q8_0 => GgmlDType::Q8_0,
        Format::Q2_K => GgmlDType::Q2K,
        Format::Q3_K => GgmlDType::Q3K,
        Format::Q4_K => GgmlDType::Q4K,
        Format::Q5_K => GgmlDType::Q5K,
        _ => GgmlDType::Q6K,
    }
}

/// Where each format keeps its f16 factors inside a block.
fn half_offsets(format: Format) -> &'static [usize] {
    match format {
        Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => &[0],
        Format::Q4_1 | Format::Q5_1 | Format::Q4_K | Format::Q5_K => &[0, 2],
        Format::Q2_K => &[80, 82],
        Format::Q3_K => &[108],
        Format::Q6_K => &[208],
    }
}

/// `rows × cols` random ggml blocks with sane f16 factors.
fn random_blocks(format: Format, rows: usize, cols: usize, noise: &mut Noise) -> Vec<u8> {
    let size = format.block_bytes();
    let count = rows * cols / format.block_values();
    let mut bytes: Vec<u8> = (0..count * size).map(|_| noise.next() as u8).collect();
    for block in bytes.chunks_exact_mut(size) {
        for &at in half_offsets(format) {
            let scale = 0.002 + 0.02 * noise.unit().abs();
            let value = if at == 2 || at == 82 {
                noise.unit() * scale
            } else {
                scale
            };
            let value = if format.block_values() == 256 {
                value / 8.0
            } else {
                value
            };
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(value).to_le_bytes());
        }
    }
    bytes
}

fn candle_rows(format: Format, rows: usize, cols: usize, bytes: &[u8]) -> Vec<f32> {
    let qtensor = qtensor_from_ggml(candle_type(format), bytes, vec![rows, cols], &Device::Cpu)
        .expect("candle reads the blocks");
    let tensor: Tensor = qtensor.dequantize(&Device::Cpu).expect("dequantize");
    tensor
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 values")
}

#[test]
fn packed_rows_dequantize_as_candle_does() {
    let mut noise = Noise(1);
    for format in Format::ALL {
        let (rows, cols) = (21, 2 * format.block_values());
        let bytes = random_blocks(format, rows, cols, &mut noise);
        let expected = candle_rows(format, rows, cols, &bytes);
        let packed = PackedMatrix::from_ggml(format, rows, cols, &bytes).expect("pack");
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            packed.dequantize_row(r, &mut row);
            for (c, (got, want)) in row.iter().zip(&expected[r * cols..]).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "{format} row {r} col {c}: {got} vs candle's {want}"
                );
            }
        }
        // As large as the file's blocks (padding rows aside), a little more
        // where scales are unpacked to bytes.
        let padded = rows.div_ceil(16) * 16;
        let file = padded * bytes.len() / rows;
        let ratio = packed.size() as f64 / file as f64;
        assert!((0.99..1.20).contains(&ratio), "{format}: {ratio}");
    }
}

#[test]
fn bad_shapes_are_refused() {
    let bytes = vec![0u8; 34 * 2];
    assert!(PackedMatrix::from_ggml(Format::Q8_0, 2, 48, &bytes).is_err());
    assert!(PackedMatrix::from_ggml(Format::Q8_0, 3, 32, &bytes).is_err());
    assert!(PackedMatrix::from_ggml(Format::Q4_K, 1, 64, &bytes).is_err());
    let w = PackedMatrix::from_ggml(Format::Q8_0, 2, 32, &bytes).expect("pack");
    let mut x = Activations::new(Format::Q4_K.scheme());
    x.quantize(&[1.0; 256], 256, Isa::Scalar).expect("quantize");
    let mut out = [0f32; 2];
    assert!(multiply(Isa::Scalar, &w, &x, &mut out, false).is_err());
    let mut x = Activations::new(Format::Q8_0.scheme());
    x.quantize(&[1.0; 64], 32, Isa::Scalar).expect("quantize");
    assert!(multiply(Isa::Scalar, &w, &x, &mut out, false).is_err());
}

/// Every format, every instruction set: the kernels equal the plain-Rust
/// ones bit for bit, a token's numbers do not depend on the tokens beside
/// it, and the result is the product of the dequantized values up to the
/// 8-bit rounding of the activations.
#[test]
fn every_instruction_set_gives_the_same_bits() {
    let mut noise = Noise(7);
    for format in Format::ALL {
        // 37 rows: two whole tiles and a padded one.
        let (rows, cols, tokens) = (37, 2 * format.block_values(), 7);
        let bytes = random_blocks(format, rows, cols, &mut noise);
        let w = PackedMatrix::from_ggml(format, rows, cols, &bytes).expect("pack");
        let input: Vec<f32> = (0..tokens * cols).map(|_| noise.unit()).collect();
        let mut x = Activations::new(format.scheme());
        x.quantize(&input, cols, Isa::Scalar).expect("quantize");

        let mut reference = vec![0f32; tokens * rows];
        multiply(Isa::Scalar, &w, &x, &mut reference, false).expect("scalar");
        for isa in Isa::supported() {
            let mut out = vec![f32::NAN; tokens * rows];
            multiply(isa, &w, &x, &mut out, false).expect("kernel");
            let same = out
                .iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{format} on {isa} differs from the scalar kernel");

            // One token at a time, and added to what is there.
            for t in 0..tokens {
                let mut one = Activations::new(format.scheme());
                one.quantize(&input[t * cols..(t + 1) * cols], cols, isa)
                    .expect("quantize");
                let mut alone = vec![1f32; rows];
                multiply(isa, &w, &one, &mut alone, true).expect("kernel");
                for (r, v) in alone.iter().enumerate() {
                    let expected = 1.0 + reference[t * rows + r];
                    assert_eq!(
                        v.to_bits(),
                        expected.to_bits(),
                        "{format} on {isa}: token {t} row {r} alone"
                    );
                }
            }
        }

        let mut row = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut row);
            let norm: f64 = row.iter().map(|v| f64::from(v.abs())).sum();
            for t in 0..tokens {
                let mut exact: f64 = (0..cols)
                    .map(|c| f64::from(row[c]) * f64::from(x.value(t, c)))
                    .sum();
                if matches!(format, Format::Q4_1 | Format::Q5_1) {
                    // The minimum multiplies ggml's f16-rounded block sum.
                    for b in 0..cols / 32 {
                        let m = f64::from(row_minimum(&bytes, format, r, b, cols));
                        let sum: f64 = (0..32).map(|c| f64::from(x.value(t, 32 * b + c))).sum();
                        exact += m * (f64::from(x.block_sum(t, b)) - sum);
                    }
                }
                let got = f64::from(reference[t * rows + r]);
                assert!(
                    (got - exact).abs() <= 1e-5 * norm.max(1.0),
                    "{format} row {r} token {t}: {got} vs {exact}"
                );
            }
        }
    }
}

/// The f16 minimum `m` of block `b` of row `r` (Q4_1 and Q5_1).
fn row_minimum(bytes: &[u8], format: Format, r: usize, b: usize, cols: usize) -> f32 {
    let at = (r * cols / 32 + b) * format.block_bytes() + 2;
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Several products in one pass give what each gives alone.
#[test]
fn products_together_equal_products_alone() {
    use kb_kernels::{Product, multiply_many};
    let mut noise = Noise(11);
    let formats = [Format::Q5_0, Format::Q8_0, Format::Q4_K];
    let cols = 256;
    let matrices: Vec<PackedMatrix> = formats
        .iter()
        .zip([48, 16, 33])
        .map(|(&format, rows)| {
            let bytes = random_blocks(format, rows, cols, &mut noise);
            PackedMatrix::from_ggml(format, rows, cols, &bytes).expect("pack")
        })
        .collect();
    let input: Vec<f32> = (0..3 * cols).map(|_| noise.unit()).collect();
    let acts: Vec<Activations> = matrices
        .iter()
        .map(|w| {
            let mut x = Activations::new(w.format().scheme());
            x.quantize(&input, cols, Isa::best()).expect("quantize");
            x
        })
        .collect();
    for isa in Isa::supported() {
        let mut alone: Vec<Vec<f32>> = Vec::new();
        for (w, x) in matrices.iter().zip(&acts) {
            let mut out = vec![0f32; 3 * w.rows()];
            multiply(isa, w, x, &mut out, false).expect("alone");
            alone.push(out);
        }
        let mut outs: Vec<Vec<f32>> = matrices.iter().map(|w| vec![0f32; 3 * w.rows()]).collect();
        let mut products: Vec<Product<'_>> = matrices
            .iter()
            .zip(&acts)
            .zip(outs.iter_mut())
            .map(|((w, x), out)| Product {
                w,
                x,
                out,
                add: false,
            })
            .collect();
        multiply_many(isa, &mut products).expect("together");
        drop(products);
        assert_eq!(outs, alone, "{isa}");
    }
}
