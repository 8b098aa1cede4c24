//! The pgolf command line. Everything that prints lives here; the library reports progress through callbacks.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// `println!` for the commands' text output: the line goes through `print::line`, which escapes the control
/// characters an input may have put in it (see `print`).
macro_rules! out {
    () => {
        $crate::print::line("")
    };
    ($($arg:tt)*) => {
        $crate::print::line(&format!($($arg)*))
    };
}

/// `print!` through `print::part`.
macro_rules! out_part {
    ($($arg:tt)*) => {
        $crate::print::part(&format!($($arg)*))
    };
}

#[path = "pgolf/cli_data.rs"]
mod cli_data;
#[path = "pgolf/cli_demo.rs"]
mod cli_demo;
#[path = "pgolf/cli_inspect.rs"]
mod cli_inspect;
#[path = "pgolf/cli_pack.rs"]
mod cli_pack;
#[path = "pgolf/cli_review.rs"]
mod cli_review;
#[path = "pgolf/cli_train.rs"]
mod cli_train;
#[path = "pgolf/cli_verify.rs"]
mod cli_verify;
#[path = "pgolf/compute.rs"]
mod compute;
#[path = "pgolf/given.rs"]
mod given;
#[path = "pgolf/print.rs"]
mod print;
#[path = "pgolf/progress.rs"]
mod progress;
#[path = "pgolf/verify_args.rs"]
mod verify_args;

#[derive(Parser)]
#[command(
    name = "pgolf",
    version,
    about = "Inspect, pack and verify Parameter Golf artifacts"
)]
struct Cli {
    /// CPU threads for the forward pass (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Cap on the bytes any decompression layer may produce.
    #[arg(long, global = true, default_value_t = pgolf::limits::Limits::DEFAULT.max_decompressed_bytes)]
    max_decompressed_bytes: u64,
    /// Cap on the elements of one tensor.
    #[arg(long, global = true, default_value_t = pgolf::limits::Limits::DEFAULT.max_tensor_elements)]
    max_tensor_elements: u64,
    /// Seconds an external decompressor (lrzip, for PGRP artifacts) may run on one stream.
    #[arg(long, global = true, default_value_t = pgolf::limits::Limits::DEFAULT.max_external_seconds)]
    max_external_seconds: u64,
    /// Bytes an artifact may decode to per byte of the file, above a 64 MiB floor (with --max-decompressed-bytes
    /// the smaller cap applies).
    #[arg(long, global = true, default_value_t = pgolf::limits::Limits::DEFAULT.max_expansion)]
    max_expansion: u64,
    /// Cap on the tokens one shard may declare.
    #[arg(long, global = true, default_value_t = pgolf::limits::Limits::DEFAULT.max_shard_tokens)]
    max_shard_tokens: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validation data: token and byte accounting, and the byte-table audit.
    Data {
        #[command(subcommand)]
        command: cli_data::DataCommand,
    },
    /// What is in an artifact, tensor by tensor, and its distance to the 16,000,000-byte cap.
    Inspect(cli_inspect::InspectArgs),
    /// Quantize and compress a checkpoint into a pgolf artifact that fits the budget.
    Pack(cli_pack::PackArgs),
    /// Re-run a model on the validation stream and recompute its BPB as the challenge does.
    Verify(Box<verify_args::VerifyArgs>),
    /// Audit a submission folder (or a whole records tree) from its own files: claims, logs, code and sizes,
    /// timing, byte accounting, significance, static legality hints.
    Review(cli_review::ReviewArgs),
    /// Train a model with the challenge's baseline recipe (Muon + Adam) on the CPU.
    Train(cli_train::TrainArgs),
    /// The whole loop on the bundled data: train a small model, pack it under a budget, inspect it, verify it
    /// with sliding windows, score-first TTT and the legality probes.
    Demo(cli_demo::DemoArgs),
}

/// Runs one subcommand (`matches`: the whole command line's, for the subcommands that tell a flag given from one
/// left at its default); `nested` when the demo chains it (the demo does not run itself).
fn dispatch(command: Command, matches: &ArgMatches, nested: bool) -> anyhow::Result<ExitCode> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .expect("the subcommand parsed")
    };
    match command {
        Command::Data { command } => cli_data::run(command),
        Command::Inspect(args) => cli_inspect::run(args),
        Command::Pack(args) => cli_pack::run(args, sub("pack")),
        Command::Verify(args) => cli_verify::run(*args, sub("verify")),
        Command::Review(args) => cli_review::run(args),
        Command::Train(args) => cli_train::run(args, sub("train")),
        Command::Demo(_) if nested => anyhow::bail!("the demo does not run itself"),
        Command::Demo(args) => cli_demo::run(args),
    }
}

/// The command line parsed, with clap's matches (which say where each value came from).
fn parse(argv: Option<&[String]>) -> Result<(Cli, ArgMatches), clap::Error> {
    let command = Cli::command();
    let matches = match argv {
        Some(argv) => command.try_get_matches_from(argv)?,
        None => command.get_matches(),
    };
    Ok((Cli::from_arg_matches(&matches)?, matches))
}

/// Runs one pgolf command line in this process (the demo chains the real subcommands this way).
pub fn run_command_line(argv: &[String]) -> anyhow::Result<ExitCode> {
    let (cli, matches) = parse(Some(argv))?;
    dispatch(cli.command, &matches, true)
}

#[global_allocator]
static ALLOCATOR: pgolf::alloc::CacheLineAligned = pgolf::alloc::CacheLineAligned;

fn main() -> ExitCode {
    // Exit quietly when stdout is closed early (`pgolf inspect … | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    pgolf::alloc::tune_for_tensors();
    let (cli, matches) = match parse(None) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    if let Some(n) = cli.threads {
        // candle's CPU kernels and rayon both size their pools from this variable; set it before either starts.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string()) };
    }
    pgolf::limits::set_current(pgolf::limits::Limits {
        max_decompressed_bytes: cli.max_decompressed_bytes,
        max_tensor_elements: cli.max_tensor_elements,
        max_shard_tokens: cli.max_shard_tokens,
        max_external_seconds: cli.max_external_seconds,
        max_expansion: cli.max_expansion,
        ..pgolf::limits::Limits::DEFAULT
    });
    // The command runs on one of rayon's workers, so that the parallel kernels it calls share the pool's threads
    // with it (on the main thread it would wait while the workers ran: one more thread than `--threads` wanting a
    // core whenever candle's own pool runs too). Workers get the main thread's stack size (candle's backward walks
    // the graph recursively).
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    let outcome = match pool {
        Ok(()) => rayon::scope(|_| dispatch(cli.command, &matches, false)),
        Err(_) => dispatch(cli.command, &matches, false),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            // One line: the error and its causes.
            let mut msg = err.to_string();
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                // Typed errors already print their source; do not repeat it.
                if !msg.contains(&cause) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
            }
            print::error_line(&msg);
            ExitCode::from(1)
        }
    }
}
