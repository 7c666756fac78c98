//! [`Pooling`]: how token vectors become one sentence vector.

use candle_core::{D, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

/// How the encoder's token vectors are combined into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The average of the token vectors, padding excluded (sentence-transformers' default).
    Mean,
    /// The vector of the first token, `[CLS]` (BGE).
    Cls,
    /// The element-wise maximum over the tokens, padding excluded.
    Max,
}

impl Pooling {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }

    /// Pools `hidden` (batch × tokens × dim) under `mask` (batch × tokens, 1 for
    /// real tokens) into batch × dim.
    pub(crate) fn pool(self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean => {
                let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)
            }
            Pooling::Max => {
                // Padding gets a large negative offset so it never wins.
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
                let offset = ((mask - 1.0)? * 1e9)?.to_dtype(hidden.dtype())?;
                hidden.broadcast_add(&offset)?.max(1)
            }
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            other => Err(crate::Error::InvalidSetting(format!(
                "unknown pooling {other:?}; expected mean, cls or max"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_ignores_padding() -> Result<()> {
        // One sequence of two real tokens and one padding token.
        let hidden = Tensor::new(&[[[1f32, 2.0], [3.0, -4.0], [100.0, 100.0]]], &Device::Cpu)?;
        let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu)?;
        assert_eq!(
            Pooling::Mean.pool(&hidden, &mask)?.to_vec2::<f32>()?,
            [[2.0, -1.0]]
        );
        assert_eq!(
            Pooling::Cls.pool(&hidden, &mask)?.to_vec2::<f32>()?,
            [[1.0, 2.0]]
        );
        assert_eq!(
            Pooling::Max.pool(&hidden, &mask)?.to_vec2::<f32>()?,
            [[3.0, 2.0]]
        );
        Ok(())
    }
}
