//! `--device`, `--precision` and `--generic-ops`, shared by `verify` and `train`.

use clap::Args;
use pgolf::infer::device::ComputeFlags;
use pgolf::kernels::Precision;

#[derive(Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Where the model runs: cpu, cuda or cuda:N (cuda needs the CUDA build, scripts/build-cuda.sh; docs/GPU.md).
    #[arg(long, default_value_t = ComputeFlags::default().device)]
    pub device: String,
    /// fp32, or mixed: the records' autocast (bf16 operands for every matrix product; f32 weights, norms,
    /// softmax and losses).
    #[arg(long, default_value = ComputeFlags::default().precision.name(), value_parser = clap::builder::ValueParser::new(parse_precision))]
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
    pub fn flags(&self) -> ComputeFlags {
        ComputeFlags {
            device: self.device.clone(),
            precision: self.precision,
            generic_ops: self.generic_ops,
        }
    }
}
