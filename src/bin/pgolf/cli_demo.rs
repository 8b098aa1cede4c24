//! `pgolf demo`: the whole loop on the bundled data, planned by `pgolf::demo`; each step prints the command a user
//! would type and runs it here, as that command runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pgolf::demo::{DEFAULT_OUT, DEFAULT_SECONDS, DemoFlags, plan};

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo writes its model, artifact and logs.
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Training time on the CPU, in seconds (the learning rate warms down over its last part).
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: f64,
    /// The SentencePiece model of the bundled sp1024 data (default: the repository's
    /// fixtures/tokenizers/fineweb_1024_bpe.model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let spec = DemoFlags {
        out: Some(args.out),
        seconds: Some(args.seconds),
        tokenizer: args.tokenizer,
    }
    .resolve()?;
    out!(
        "pgolf demo: a {}-parameter sp1024 model ({} layers × {}), trained for {} s on the bundled FineWeb sample\n\
         (shard 0 for training, the first 16,384 tokens of shard 1 held out), packed under {} bytes —\n\
         16,000,000 × its share of the 9×512 baseline's {} parameters.",
        spec.config.parameter_count(),
        spec.config.num_layers,
        spec.config.model_dim,
        spec.seconds,
        spec.budget,
        spec.baseline_parameters
    );
    let plan = plan(&spec, &pgolf::limits::current())?;
    let report = plan.run(&mut |step| {
        out!("\n== {}", step.title);
        out!("$ {}", step.args.join(" "));
        crate::run_command_line(&step.args)
            .map(exit_code)
            .map_err(|e| format!("{e:#}"))
    })?;
    if report.exit_code != 0 {
        return Ok(ExitCode::from(report.exit_code));
    }
    out!(
        "\n== done: model, artifact, receipts and logs are in {}/ (the planted violation above was flagged, as it must be)",
        report.out
    );
    Ok(ExitCode::SUCCESS)
}

/// The number of an exit code (0 for success, 2 for a failing check, 1 otherwise).
fn exit_code(code: ExitCode) -> u8 {
    if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(2) {
        2
    } else {
        1
    }
}
