//! [`PackedMatrix`]: a ggml weight matrix repacked for the integer kernels.
//!
//! Rows are taken 16 at a time (a tile; the last one padded with zero rows).
//! For each tile and super-block there is one record:
//!
//! - the f16 factors of the 16 rows (`d`, then `m` or `dmin` where the
//!   format has minimums): one 32-byte line each;
//! - per block of 32 columns, the quants as 8 *lines* of four consecutive
//!   columns × 16 rows (row `i`'s four values in bytes `4i..4i + 4`), so one
//!   broadcast of four activation bytes meets the right weight of every row.
//!   Lines of fewer than 8 bits share 64-byte vectors: line `L`'s low bits
//!   sit in vector `L mod n` at bit `low·(L div n)` (`n` vectors), its high
//!   bits likewise in the vectors after them;
//! - the rows' integer sub-scales and minimums, 16 bytes per group.
//!
//! The quants keep their bit widths and the factors stay f16, so the packed
//! matrix is as large as the file's blocks (a few percent more for Q2_K …
//! Q5_K, whose scales are unpacked to bytes).

use rayon::prelude::*;

use crate::buffer::Buffer;
use crate::error::{Error, Result};
use crate::formats::{BLOCK, Format, Layout, Mins, RowBlock};

/// Rows per tile.
pub const TILE: usize = 16;

/// A `rows × cols` matrix of ggml blocks, packed in tiles for
/// [`crate::multiply`].
///
/// ```
/// use kb_kernels::{Format, PackedMatrix};
///
/// // Two rows of one Q8_0 block: scale 0.5 (f16 0x3800), quants 0..31.
/// let mut bytes = Vec::new();
/// for _ in 0..2 {
///     bytes.extend_from_slice(&0x3800u16.to_le_bytes());
///     bytes.extend(0..32u8);
/// }
/// let w = PackedMatrix::from_ggml(Format::Q8_0, 2, 32, &bytes)?;
/// let mut row = [0f32; 32];
/// w.dequantize_row(1, &mut row);
/// assert_eq!(row[3], 1.5);
/// # Ok::<(), kb_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    data: Buffer,
}

impl PackedMatrix {
    /// Packs `rows × cols` weights stored as ggml blocks of `format`, row
    /// after row (as GGUF files hold them).
    pub fn from_ggml(format: Format, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let expected = Self::ggml_size(format, rows, cols)?;
        if bytes.len() as u64 != expected {
            return Err(Error::Shape(format!(
                "{} bytes are not {rows} rows of {cols} {format} values",
                bytes.len()
            )));
        }
        Self::read_ggml(format, rows, cols, &mut &bytes[..])
    }

    /// Bytes of `rows × cols` weights as ggml blocks of `format`.
    pub fn ggml_size(format: Format, rows: usize, cols: usize) -> Result<u64> {
        let per_block = format.block_values();
        if cols == 0 || !cols.is_multiple_of(per_block) {
            return Err(Error::Shape(format!(
                "rows of {cols} values do not split into {format} blocks of {per_block}"
            )));
        }
        let row_bytes = (cols / per_block * format.block_bytes()) as u64;
        (rows as u64)
            .checked_mul(row_bytes)
            .ok_or_else(|| Error::Shape(format!("{rows} rows of {cols} values overflow")))
    }

    /// Packs `rows × cols` weights read from `reader` as ggml blocks of
    /// `format`, row after row, a few hundred rows at a time: the memory it
    /// takes beyond the packed matrix is one such slice, never a copy of the
    /// whole tensor.
    pub fn read_ggml(
        format: Format,
        rows: usize,
        cols: usize,
        reader: &mut impl std::io::Read,
    ) -> Result<Self> {
        Self::ggml_size(format, rows, cols)?;
        let sbs = cols / format.block_values();
        let row_bytes = sbs * format.block_bytes();
        let layout = format.layout();
        let record = layout.record();
        let tiles = rows.div_ceil(TILE);
        let mut data = Buffer::zeroed(tiles * sbs * record);
        // Tiles read and packed at a time (in parallel).
        const CHUNK: usize = 64;
        let mut raw = Vec::new();
        for (c, packed) in data.chunks_mut(CHUNK * sbs * record).enumerate() {
            let first = c * CHUNK * TILE;
            let count = (rows - first).min(CHUNK * TILE);
            raw.resize(count * row_bytes, 0);
            reader.read_exact(&mut raw)?;
            packed
                .par_chunks_mut(sbs * record)
                .enumerate()
                .for_each(|(tile, records)| {
                    let mut blocks: [RowBlock; TILE] = std::array::from_fn(|_| RowBlock {
                        scales: [0; 16],
                        ..RowBlock::default()
                    });
                    for (s, out) in records.chunks_exact_mut(record).enumerate() {
                        for (i, block) in blocks.iter_mut().enumerate() {
                            let row = tile * TILE + i;
                            if row < count {
                                let at = row * row_bytes + s * format.block_bytes();
                                *block = format.decode(&raw[at..at + format.block_bytes()]);
                            }
                        }
                        pack(&layout, &blocks, out);
                    }
                });
        }
        Ok(PackedMatrix {
            format,
            rows,
            cols,
            data,
        })
    }

    /// The weight type.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Super-blocks per row.
    pub(crate) fn superblocks(&self) -> usize {
        self.cols / self.format.block_values()
    }

    /// The packed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Row `row` as f32, exactly as ggml dequantizes it.
    ///
    /// # Panics
    /// When `row` is out of range or `out` holds fewer than `cols` values.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows, "row {row} of {}", self.rows);
        let layout = self.format.layout();
        let (record, per_block) = (layout.record(), self.format.block_values());
        let sbs = self.superblocks();
        let (tile, lane) = (row / TILE, row % TILE);
        for (s, out) in out[..self.cols].chunks_exact_mut(per_block).enumerate() {
            let at = (tile * sbs + s) * record;
            let block = unpack(&layout, &self.data[at..at + record], lane);
            self.format.dequantize(&block, out);
        }
    }
}

/// Writes the record of 16 rows' blocks.
fn pack(layout: &Layout, blocks: &[RowBlock; TILE], out: &mut [u8]) {
    out.fill(0);
    for (i, block) in blocks.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&block.a.to_le_bytes());
        if layout.mins != Mins::None {
            out[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&block.b.to_le_bytes());
        }
    }
    let (nl, nh) = (layout.low as usize, layout.high as usize);
    let low_mask = ((1u32 << layout.low) - 1) as u8;
    let high_mask = ((1u32 << layout.high) - 1) as u8;
    for j in 0..layout.blocks {
        let body = &mut out[layout.header() + j * layout.body()..][..layout.body()];
        for line in 0..BLOCK / 4 {
            let (v, shift) = (line % nl, layout.low as usize * (line / nl));
            for (i, block) in blocks.iter().enumerate() {
                for c in 0..4 {
                    let q = block.q[j * BLOCK + 4 * line + c];
                    body[v * 64 + 4 * i + c] |= (q & low_mask) << shift;
                    if nh > 0 {
                        let (hv, hshift) = (line % nh, layout.high as usize * (line / nh));
                        body[(nl + hv) * 64 + 4 * i + c] |=
                            ((q >> layout.low) & high_mask) << hshift;
                    }
                }
            }
        }
        let scales = (nl + nh) * 64;
        for g in 0..layout.groups {
            for (i, block) in blocks.iter().enumerate() {
                let group = 2 * j + g * (2 / layout.groups);
                body[scales + 16 * g + i] = block.scales[group] as u8;
                if layout.mins == Mins::Groups {
                    body[scales + 16 * (layout.groups + g) + i] = block.mins[group];
                }
            }
        }
    }
}

/// Row `lane`'s block back from a record: the inverse of [`pack`].
fn unpack(layout: &Layout, record: &[u8], lane: usize) -> RowBlock {
    let mut block = RowBlock {
        a: u16::from_le_bytes([record[2 * lane], record[2 * lane + 1]]),
        ..RowBlock::default()
    };
    if layout.mins != Mins::None {
        block.b = u16::from_le_bytes([record[32 + 2 * lane], record[32 + 2 * lane + 1]]);
    }
    let (nl, nh) = (layout.low as usize, layout.high as usize);
    let low_mask = ((1u32 << layout.low) - 1) as u8;
    let high_mask = ((1u32 << layout.high) - 1) as u8;
    for j in 0..layout.blocks {
        let body = &record[layout.header() + j * layout.body()..][..layout.body()];
        for line in 0..BLOCK / 4 {
            let (v, shift) = (line % nl, layout.low as usize * (line / nl));
            for c in 0..4 {
                let mut q = (body[v * 64 + 4 * lane + c] >> shift) & low_mask;
                if nh > 0 {
                    let (hv, hshift) = (line % nh, layout.high as usize * (line / nh));
                    q |=
                        ((body[(nl + hv) * 64 + 4 * lane + c] >> hshift) & high_mask) << layout.low;
                }
                block.q[j * BLOCK + 4 * line + c] = q;
            }
        }
        let scales = (nl + nh) * 64;
        for half in 0..2 {
            let g = half * layout.groups / 2;
            if layout.groups > 0 {
                block.scales[2 * j + half] = body[scales + 16 * g + lane] as i8;
            }
            if layout.mins == Mins::Groups {
                block.mins[2 * j + half] = body[scales + 16 * (layout.groups + g) + lane];
            }
        }
    }
    block
}
