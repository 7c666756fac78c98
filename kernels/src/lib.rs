//! kb-kernels: the integer and SIMD kernels of kb's local engines.
//!
//! Quantized models spend their time multiplying weight matrices by
//! activations. This crate does it the way llama.cpp does — weights stay in
//! ggml's quantized types, activations are quantized to 8 bits, the products
//! run in integer arithmetic — with one difference that kb relies on: the
//! numbers are the same whatever the processor, the batch or the thread
//! count, so a prompt prefix served from a cache, a token decoded alone and
//! a machine without AVX-512 all agree to the bit.
//!
//! # Core concepts
//! - [`Format`]: the ggml weight types with a kernel (Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0, Q2_K … Q6_K).
//! - [`PackedMatrix`]: a weight matrix repacked in tiles of 16 rows, as large
//!   as the file's blocks.
//! - [`Activations`]: rows quantized to bytes per block ([`Scheme`]).
//! - [`multiply`]: their product, spread over the rayon pool;
//!   [`multiply_many`] runs several in one pass.
//! - [`Isa`]: the kernel families (AVX-512 VNNI, AVX2, plain Rust) and the
//!   `KB_KERNELS` switch that forces one.
//! - [`math`]: a fast exponential and maximum for softmax and friends;
//!   [`dense`]: the f32 matrix product, dot product and AVX2 dispatch
//!   ([`with_avx2_fma!`]) beside the integer ones.
//!
//! # Example
//!
//! ```
//! use kb_kernels::{Activations, Format, Isa, PackedMatrix, multiply};
//!
//! // Two Q4_0 rows of 32 weights, d = 0.25 (f16 0x3400): row 0 all q = 9
//! // (weight 0.25), row 1 all q = 7 (weight −0.25).
//! let mut bytes = Vec::new();
//! for nibbles in [0x99u8, 0x77] {
//!     bytes.extend_from_slice(&0x3400u16.to_le_bytes());
//!     bytes.extend([nibbles; 16]);
//! }
//! let w = PackedMatrix::from_ggml(Format::Q4_0, 2, 32, &bytes)?;
//! let mut x = Activations::new(Format::Q4_0.scheme());
//! x.quantize(&[1.0; 32], 32, Isa::best())?;
//! let mut out = [0f32; 2];
//! let mut first = None;
//! for isa in Isa::supported() {
//!     multiply(isa, &w, &x, &mut out, false)?;
//!     // 32 · 0.25 · 1.0, up to the 8-bit rounding of the activations…
//!     assert!((out[0] - 8.0).abs() < 1e-2 && (out[1] + 8.0).abs() < 1e-2);
//!     // …and the same bits on every instruction set.
//!     assert_eq!(*first.get_or_insert(out), out);
//! }
//! # Ok::<(), kb_kernels::Error>(())
//! ```

mod acts;
mod buffer;
pub mod dense;
mod error;
mod formats;
mod isa;
mod kernel;
pub mod math;
mod multiply;
mod packed;

pub use acts::{Activations, Scheme};
pub use error::{Error, Result};
pub use formats::{BLOCK, Format, dequantize};
pub use isa::{Isa, KERNELS_ENV};
pub use multiply::{Product, multiply, multiply_many};
pub use packed::{PackedMatrix, TILE};
