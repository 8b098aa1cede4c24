//! Where a model runs: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.

use candle_core::Device;
use serde::Serialize;

use super::{InferError, Result};
use crate::kernels::{Backend, Precision};

/// Where and how a model computes, as `--device`, `--precision` and `--generic-ops` give it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComputeFlags {
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub precision: Precision,
    /// The device-generic operations a GPU runs, on the CPU too.
    pub generic_ops: bool,
}

impl Default for ComputeFlags {
    fn default() -> Self {
        ComputeFlags {
            device: "cpu".into(),
            precision: Precision::Fp32,
            generic_ops: false,
        }
    }
}

impl ComputeFlags {
    /// The device, and the backend a model built there runs on.
    pub fn open(&self) -> Result<(Device, Backend)> {
        let device = open(&self.device)?;
        let backend = Backend::choose(&device, self.precision, self.generic_ops);
        Ok((device, backend))
    }
}

/// Whether this binary was built with the CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The device a `--device` value names: `cpu`, `cuda` (ordinal 0) or `cuda:N`.
pub fn open(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(InferError::Device(format!(
                    "unknown device {spec:?}: expected cpu, cuda or cuda:N"
                )));
            }
        },
    };
    open_cuda(spec, ordinal)
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &str, ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        // candle's message may carry a backtrace on later lines; the first names the driver's error.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default().to_string();
        InferError::Device(if first.contains("CUDA_ERROR_STUB_LIBRARY") {
            format!(
                "{spec}: no NVIDIA driver here: libcuda.so.1 is the build's stub (CUDA_ERROR_STUB_LIBRARY); \
                 run the CUDA build where the driver is installed (docs/GPU.md)"
            )
        } else {
            format!("{spec}: cannot open the CUDA device: {first}")
        })
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &str, _ordinal: usize) -> Result<Device> {
    Err(InferError::Device(format!(
        "{spec}: this pgolf was built without CUDA; build it with scripts/build-cuda.sh \
         (cargo build --release --features cuda) and run it where the NVIDIA driver is (docs/GPU.md)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_opens_and_bad_names_are_refused() {
        assert!(open("cpu").unwrap().is_cpu());
        let err = open("gpu").unwrap_err().to_string();
        assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        let err = open("cuda:x").unwrap_err().to_string();
        assert!(err.contains("\"cuda:x\""), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_names_the_build_script() {
        let err = open("cuda:1").unwrap_err().to_string();
        assert!(
            err.contains("built without CUDA") && err.contains("scripts/build-cuda.sh"),
            "{err}"
        );
    }
}
