//! [`Isa`]: the instruction set a kernel family is written for, which of
//! them this processor runs, and the `KB_KERNELS` switch that forces one so
//! that every family is tested (and benchmarked) on whatever machine runs
//! the tests.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable that forces a kernel family: `auto` (the best
/// this processor runs, the default), `avx512-vnni`, `avx2` or `scalar`.
pub const KERNELS_ENV: &str = "KB_KERNELS";

/// A family of kernels. Every family gives the same numbers, bit for bit:
/// they differ only in speed.
///
/// ```
/// use kb_kernels::Isa;
///
/// assert!(Isa::Scalar.is_supported());
/// assert_eq!("avx2".parse::<Isa>().ok(), Some(Isa::Avx2));
/// assert!(Isa::supported().contains(&Isa::best()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust: any processor.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Intel since Haswell, AMD since Zen).
    Avx2,
    /// x86-64 with AVX-512 (F, BW) and VNNI (Intel since Ice Lake, AMD since
    /// Zen 4).
    Avx512Vnni,
}

impl Isa {
    /// Every family, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    /// The family's name, as `KB_KERNELS` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether this processor runs the family.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The families this processor runs, best first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .rev()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The fastest family this processor runs.
    pub fn best() -> Isa {
        Isa::supported().first().copied().unwrap_or(Isa::Scalar)
    }

    /// The family `KB_KERNELS` asks for (the best one when it is unset or
    /// `auto`). Fails when it names no family, or one this processor cannot
    /// run.
    pub fn from_env() -> Result<Isa> {
        match std::env::var(KERNELS_ENV) {
            Ok(value) => Isa::resolve(&value),
            Err(_) => Ok(Isa::best()),
        }
    }

    /// The family `value` names, checked against this processor; `auto`
    /// (or nothing) is the best one.
    pub fn resolve(value: &str) -> Result<Isa> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("auto") {
            return Ok(Isa::best());
        }
        let isa: Isa = value.parse()?;
        if !isa.is_supported() {
            return Err(Error::UnsupportedIsa {
                asked: isa.name(),
                available: Isa::supported()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(isa)
    }

    /// [`Isa::from_env`], read once per process; where the variable is
    /// invalid, the best family (callers that must report the problem use
    /// [`Isa::from_env`] first).
    pub fn current() -> Isa {
        static CURRENT: OnceLock<Isa> = OnceLock::new();
        *CURRENT.get_or_init(|| Isa::from_env().unwrap_or_else(|_| Isa::best()))
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;

    fn from_str(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "generic" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512-vnni" | "avx512" | "vnni" | "avx512vnni" => Ok(Isa::Avx512Vnni),
            _ => Err(Error::UnknownIsa {
                value: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().ok(), Some(isa));
        }
        assert!(matches!(
            "sse9".parse::<Isa>(),
            Err(Error::UnknownIsa { .. })
        ));
        assert_eq!(Isa::resolve("auto").ok(), Some(Isa::best()));
        assert_eq!(Isa::resolve("scalar").ok(), Some(Isa::Scalar));
        for isa in Isa::ALL {
            match Isa::resolve(isa.name()) {
                Ok(got) => assert!(got.is_supported() && got == isa),
                Err(e) => {
                    assert!(!isa.is_supported());
                    assert!(e.to_string().contains("lacks"), "{e}");
                }
            }
        }
    }
}
