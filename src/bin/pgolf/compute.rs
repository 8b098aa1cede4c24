//! `--device` and `--precision`, shared by `verify` and `train`.

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use pgolf::infer::precision::Precision;

#[derive(Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Where the model runs: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh; docs/GPU.md).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32, or mixed: the records' autocast (bf16 operands for every matrix product; f32 weights, norms,
    /// softmax and losses).
    #[arg(long, default_value = "fp32", value_parser = clap::builder::ValueParser::new(parse_precision))]
    pub precision: Precision,
    /// Run the device-generic operations a GPU runs (explicit masked-softmax attention, composed RMSNorm, RoPE and
    /// cross-entropy, candle's autograd) instead of the hand-written CPU kernels: the GPU's code path, on the CPU.
    #[arg(long)]
    pub generic_ops: bool,
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    s.parse()
}

impl ComputeArgs {
    pub fn open(&self) -> Result<Device> {
        Ok(pgolf::infer::device::open(&self.device)?)
    }
}
