//! The architectures the CPU engine runs, one file each, on the layers they
//! share.

mod config;
mod cpu;
mod gemma3;
mod layers;
mod llama;

pub(crate) use config::{Arch, Config};
pub(crate) use cpu::CpuModel;
pub(crate) use layers::{Cache, Pass};
