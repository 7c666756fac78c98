//! [`Simd`]: the vector operations the generic kernel is written in, over
//! the 16 rows of a tile (or 8 of them, for 256-bit registers).

/// One instruction set's vectors: `B`, four bytes per row (a line of
/// weights); `I`, an i32 per row; `F`, an f32 per row.
///
/// Every method is `#[inline(always)]`: the kernel is compiled into one
/// function per instruction set with that set's features enabled.
pub(crate) trait Simd: Copy {
    /// Rows per vector: 16, or 8 for 256-bit registers.
    const LANES: usize;
    /// What [`Simd::dots_signed`] adds per unit of the activations' sum
    /// (it may multiply `q + bias` instead of `q`).
    const SIGNED_BIAS: i32;
    /// Four bytes per row.
    type B: Copy;
    /// An i32 per row.
    type I: Copy;
    /// An f32 per row.
    type F: Copy;

    /// All-zero bytes.
    fn zero_b() -> Self::B;
    /// `4·LANES` bytes from `p`.
    ///
    /// # Safety
    /// `p` must be valid for reading that many bytes.
    unsafe fn load_b(p: *const u8) -> Self::B;
    /// `(v >> shift) & mask` per byte (`shift < 8`).
    fn field(v: Self::B, shift: u32, mask: u8) -> Self::B;
    /// `lo | hi << shift` per byte, `hi << shift` fitting in a byte.
    fn merge(lo: Self::B, hi: Self::B, shift: u32) -> Self::B;
    /// Per row, `Σ_n Σ_c w[n][c] · x[n][c]`: unsigned weights `w`, signed
    /// activation bytes `x` (four per line). Lines may be summed in i16
    /// `per16` at a time without overflow.
    fn dots(w: &[Self::B], x: &[i32], per16: usize) -> Self::I;
    /// Signed weights in the form [`Simd::dots_signed`] reads: done once per
    /// line, not once per token.
    fn signed(w: Self::B) -> Self::B;
    /// [`Simd::dots`] with signed weights (through [`Simd::signed`]), plus
    /// [`Simd::SIGNED_BIAS`] times the sum of the activation bytes.
    fn dots_signed(w: &[Self::B], x: &[i32]) -> Self::I;
    /// `v` in every row.
    fn splat_i(v: i32) -> Self::I;
    /// `a + b`.
    fn add_i(a: Self::I, b: Self::I) -> Self::I;
    /// `a − b`.
    fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    /// `a · b` (low 32 bits).
    fn mul_i(a: Self::I, b: Self::I) -> Self::I;
    /// `LANES` signed bytes from `p`, widened.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` bytes.
    unsafe fn load_i8(p: *const u8) -> Self::I;
    /// `LANES` unsigned bytes from `p`, widened.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` bytes.
    unsafe fn load_u8(p: *const u8) -> Self::I;
    /// `LANES` f16 values (little-endian bits) from `p`, widened.
    ///
    /// # Safety
    /// `p` must be valid for reading `2·LANES` bytes.
    unsafe fn load_f16(p: *const u8) -> Self::F;
    /// Each i32 rounded to the nearest f32 (ties to even).
    fn to_f(v: Self::I) -> Self::F;
    /// `v` in every row.
    fn splat_f(v: f32) -> Self::F;
    /// `a + b`.
    fn add_f(a: Self::F, b: Self::F) -> Self::F;
    /// `a − b`.
    fn sub_f(a: Self::F, b: Self::F) -> Self::F;
    /// `a · b`.
    fn mul_f(a: Self::F, b: Self::F) -> Self::F;
    /// Writes the first `n` rows of `v` to `p` (or adds them to what is
    /// there).
    ///
    /// # Safety
    /// `p` must be valid for writing `n ≤ LANES` floats.
    unsafe fn store_f(p: *mut f32, v: Self::F, n: usize, add: bool);
}
