//! [`GgufFile`]: a GGUF model file's metadata and tensors, read through candle's
//! GGUF parser.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device};

use crate::error::{LlmError, Result};

/// An open GGUF file: its metadata, and tensors read on demand.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

/// Where a tensor's bytes are: its element type, shape (outermost first),
/// offset in the file and size.
pub(crate) struct TensorPlace {
    pub(crate) dtype: GgmlDType,
    pub(crate) dims: Vec<usize>,
    offset: u64,
    pub(crate) bytes: u64,
}

impl GgufFile {
    /// Opens `path` and reads its header. Fails with [`LlmError::Corrupt`] when
    /// the file is not GGUF or is truncated.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| LlmError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// Forgets the metadata under `prefix` (the vocabulary, once the
    /// tokenizer is built from it: megabytes of strings that would otherwise
    /// stay in memory while the weights load).
    pub fn forget(&mut self, prefix: &str) {
        self.content
            .metadata
            .retain(|key, _| !key.starts_with(prefix));
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    /// Whether the metadata has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| LlmError::metadata(key, "missing"))
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(LlmError::metadata(
                key,
                format!("expected a string, found {:?}", other.value_type()),
            )),
        }
    }

    /// An integer value of any width, as `usize`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        int_of(v).ok_or_else(|| {
            LlmError::metadata(
                key,
                format!("expected an integer, found {:?}", v.value_type()),
            )
        })
    }

    /// A float value (any float or integer type).
    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => int_of(other).map(|v| v as f32).ok_or_else(|| {
                LlmError::metadata(
                    key,
                    format!("expected a number, found {:?}", other.value_type()),
                )
            }),
        }
    }

    /// A boolean value.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            other => int_of(other).map(|v| v != 0).ok_or_else(|| {
                LlmError::metadata(
                    key,
                    format!("expected a boolean, found {:?}", other.value_type()),
                )
            }),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(LlmError::metadata(key, "expected an array"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(LlmError::metadata(key, "expected an array of strings")),
            })
            .collect()
    }

    /// An array of integers.
    pub fn ints(&self, key: &str) -> Result<Vec<usize>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(LlmError::metadata(key, "expected an array"));
        };
        items
            .iter()
            .map(|v| int_of(v).ok_or_else(|| LlmError::metadata(key, "expected integers")))
            .collect()
    }

    /// An array of numbers, as `f32` (`tokenizer.ggml.scores`).
    pub fn floats(&self, key: &str) -> Result<Vec<f32>> {
        let Value::Array(items) = self.value(key)? else {
            return Err(LlmError::metadata(key, "expected an array"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::F32(f) => Ok(*f),
                Value::F64(f) => Ok(*f as f32),
                other => int_of(other)
                    .map(|i| i as f32)
                    .ok_or_else(|| LlmError::metadata(key, "expected numbers")),
            })
            .collect()
    }

    /// Whether the file has a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The shape of tensor `name`, outermost dimension first.
    pub(crate) fn dims(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| info.shape.dims().to_vec())
            .ok_or_else(|| LlmError::tensor(name, "missing from the file"))
    }

    /// Tensor `name`'s type and shape, and a reader over its bytes as
    /// stored (checked to lie inside the file).
    pub(crate) fn stream(&mut self, name: &str) -> Result<(TensorPlace, impl Read + '_)> {
        let place = self.place(name)?;
        self.reader
            .seek(std::io::SeekFrom::Start(place.offset))
            .map_err(|source| LlmError::Io {
                path: self.path.clone(),
                source,
            })?;
        let bytes = place.bytes;
        Ok((place, (&mut self.reader).take(bytes)))
    }

    /// Tensor `name` converted to f32, row-major.
    pub(crate) fn f32_tensor(&mut self, name: &str) -> Result<Vec<f32>> {
        let qtensor = self.qtensor(name)?;
        qtensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| LlmError::tensor(name, e.to_string()))
    }

    fn qtensor(&mut self, name: &str) -> Result<candle_core::quantized::QTensor> {
        self.qtensor_on(name, &Device::Cpu)
    }

    /// Tensor `name` as stored, on `device`.
    pub(crate) fn qtensor_on(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor> {
        self.place(name)?;
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LlmError::tensor(name, "missing from the file"))?;
        let offset = self.content.tensor_data_offset;
        read_tensor(info, &mut self.reader, offset, device).map_err(|e| LlmError::Corrupt {
            path: self.path.clone(),
            message: format!("tensor {name:?}: {e}"),
        })
    }

    /// Where tensor `name` is. The header's word for a tensor's size is
    /// checked against the file before anything is allocated: a crafted
    /// header must not make kb reserve terabytes.
    fn place(&self, name: &str) -> Result<TensorPlace> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LlmError::tensor(name, "missing from the file"))?;
        let corrupt = |message: String| LlmError::Corrupt {
            path: self.path.clone(),
            message: format!("tensor {name:?}: {message}"),
        };
        let file_len = self
            .reader
            .get_ref()
            .metadata()
            .map_err(|e| corrupt(e.to_string()))?
            .len();
        let (block, type_size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        let bytes = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .map(|elements| elements.div_ceil(block as u64) * type_size as u64);
        let offset = self.content.tensor_data_offset.checked_add(info.offset);
        let end = bytes.zip(offset).and_then(|(b, o)| b.checked_add(o));
        match (bytes, offset, end) {
            (Some(bytes), Some(offset), Some(end)) if end <= file_len => Ok(TensorPlace {
                dtype: info.ggml_dtype,
                dims: info.shape.dims().to_vec(),
                offset,
                bytes,
            }),
            _ => Err(corrupt(format!(
                "its shape {:?} needs {} bytes past the end of the {file_len}-byte file",
                info.shape.dims(),
                bytes.map_or_else(|| "more".to_string(), |b| b.to_string())
            ))),
        }
    }
}

/// The GGUF file `path` names: the path itself, or the one `.gguf` file in
/// a directory (a model installed by `kb models fetch`).
pub(crate) fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let io = |source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            found.push(p);
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(LlmError::Corrupt {
            path: path.to_path_buf(),
            message: "the directory holds no .gguf file".into(),
        }),
        _ => Err(LlmError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "the directory holds several .gguf files ({}); name one",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn read_tensor<R: Read + Seek>(
    info: &candle_core::quantized::gguf_file::TensorInfo,
    reader: &mut R,
    offset: u64,
    device: &Device,
) -> candle_core::Result<candle_core::quantized::QTensor> {
    info.read(reader, offset, device)
}

fn int_of(v: &Value) -> Option<usize> {
    match *v {
        Value::U8(v) => Some(v as usize),
        Value::I8(v) => usize::try_from(v).ok(),
        Value::U16(v) => Some(v as usize),
        Value::I16(v) => usize::try_from(v).ok(),
        Value::U32(v) => Some(v as usize),
        Value::I32(v) => usize::try_from(v).ok(),
        Value::U64(v) => usize::try_from(v).ok(),
        Value::I64(v) => usize::try_from(v).ok(),
        _ => None,
    }
}
