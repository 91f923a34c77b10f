//! `--device cpu|cuda|cuda:N`: where the commands that run a model compute (`train deepsdf`,
//! `sdf reconstruct`, `mesh`).
//!
//! CUDA needs a build with the `cuda` feature (`cargo build --release --features cuda`, which
//! needs the CUDA toolkit); a CPU build answers `--device cuda` with an error that says so.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result};
use candle_core::Device;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA GPU number `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceArg {
    /// Opens the device: an error naming the `cuda` feature in a build without it, or the
    /// driver's error (no GPU, bad ordinal) with the device named.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => match Device::new_cuda(ordinal) {
                Ok(device) => Ok(device),
                Err(candle_core::Error::NotCompiledWithCudaSupport) => Err(anyhow::anyhow!(
                    "--device {self}: built without CUDA support; rebuild with --features cuda"
                )),
                Err(e) => Err(e).with_context(|| format!("opening CUDA device {ordinal}")),
            },
        }
    }
}

/// The `--device` option, flattened into a command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceOpt {
    /// Where to compute: cpu, cuda (GPU 0) or cuda:N (needs a build with --features cuda).
    #[arg(long = "device", value_name = "DEVICE", default_value = "cpu")]
    pub device: DeviceArg,
}

impl DeviceOpt {
    /// Opens the chosen device (see [`DeviceArg::open`]).
    pub fn open(&self) -> Result<Device> {
        self.device.open()
    }
}
