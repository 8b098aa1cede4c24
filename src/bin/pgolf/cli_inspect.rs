//! `pgolf inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pgolf::infer::patch_jepa::PatchJepaConfig;
use pgolf::infer::presets;
use pgolf::pack::artifact::load_artifact;
use pgolf::pack::budget::{SizeCheck, code_size};
use pgolf::pack::stats::{self, TensorStats};
use serde_json::json;

use crate::progress;

#[derive(Args)]
pub struct InspectArgs {
    /// The artifact: safetensors, a torch `.pt`, or a compressed `.ptz` (zlib, zstd, xz, brotli, BSHF).
    file: PathBuf,
    /// The submission's `train_gpt.py`: its bytes count toward the 16,000,000-byte cap.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Skip compressing each tensor alone with the artifact's coder (faster; no shares).
    #[arg(long)]
    no_shares: bool,
    /// Also code every quantized tensor's symbols with every coder (zlib, zstd, xz, brotli, each ± shuffle, and
    /// pgolf's rANS) and compare with their order-0 entropy.
    #[arg(long)]
    coders: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let limits = pgolf::limits::current();
    let artifact = load_artifact(&args.file, &limits)?;
    let coder = if args.no_shares {
        None
    } else {
        artifact.coder()
    };
    let bar = progress::bar(artifact.tensors.len() as u64, "tensors", args.json);
    let stats = stats::tensor_stats(&artifact, coder, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let code = args
        .code
        .as_ref()
        .map(|p| code_size(p, &limits))
        .transpose()?;
    let coders = args.coders.then(|| stats::coder_comparison(&artifact));
    let params: usize = stats.iter().map(|s| s.params).sum();
    let model_bytes = artifact.file_bytes;
    let size = SizeCheck::against_cap(model_bytes, code.as_ref().map(|c| c.counted_bytes));
    let how = match coder {
        _ if artifact.stored_bytes.is_some() && !args.no_shares => {
            "the bytes each tensor occupies in the file (rANS symbols plus its coded scales or values: exact)"
                .to_string()
        }
        Some(c) => format!(
            "each tensor's stored bytes (symbols + scales) compressed alone with {}",
            c.describe()
        ),
        None => "not measured (no compression layer)".into(),
    };
    let named: Vec<(String, Vec<usize>)> = stats
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let patch_jepa = PatchJepaConfig::from_tensors(&named);
    let preset = presets::closest_preset(&named)
        .filter(|_| patch_jepa.is_none())
        .map(|m| {
            let record = presets::preset(m.name)
                .map(|p| p.record)
                .unwrap_or_default();
            (m, record)
        });
    if args.json {
        let obj = json!({
            "file": args.file.display().to_string(),
            "architecture": if patch_jepa.is_some() { "byte_patch_jepa" } else { "gpt" },
            "inferred_config": patch_jepa,
            "preset": preset.as_ref().map(|(m, record)| json!({
                "name": m.name,
                "record": record,
                "exact": m.exact(),
                "missing": m.missing,
                "extra": m.extra,
                "reshaped": m.reshaped,
            })),
            "container": artifact.container,
            "format": artifact.format,
            "layers": artifact.layers,
            "bundled": artifact.bundled.iter().map(|(name, b)| json!({"name": name, "bytes": b.len()})).collect::<Vec<_>>(),
            "tensors": stats,
            "parameters": params,
            "bits_per_parameter": 8.0 * model_bytes as f64 / params.max(1) as f64,
            "share_measured_as": how,
            "model_bytes": model_bytes,
            "code": code,
            "size": size,
        });
        let mut obj = obj;
        if let Some((entropy, n, sizes)) = &coders {
            obj["coders"] = json!({"symbols": n, "entropy_bytes": entropy, "sizes": sizes});
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(ExitCode::SUCCESS);
    }
    let layers: Vec<String> = artifact.layers.iter().map(|l| l.name()).collect();
    println!(
        "{}: {} bytes, {} {}{}",
        args.file.display(),
        model_bytes,
        artifact.container.name(),
        artifact.format,
        if layers.is_empty() {
            String::new()
        } else {
            format!(" under {}", layers.join(" > "))
        }
    );
    for (name, b) in &artifact.bundled {
        println!(
            "bundled next to the weights: {name:?}, {} bytes (inside the compressed model bytes)",
            b.len()
        );
    }
    println!(
        "{:<34} {:>13} {:<18} {:>4} {:>9} {:>11} {:>7} {:>6} {:>10} {:>6} {:>9} {:>9} {:>6}",
        "tensor",
        "shape",
        "scheme",
        "bits",
        "params",
        "range",
        "H(b/s)",
        "sat%",
        "scale med",
        "floor%",
        "raw B",
        "coded B",
        "share"
    );
    for s in &stats {
        print_row(s);
    }
    if let Some((entropy, n, sizes)) = &coders {
        println!(
            "coders on the {n} quantized symbols (each tensor alone; order-0 entropy {entropy:.0} bytes):"
        );
        for c in sizes {
            println!(
                "  {:<34} {:>10} bytes  {:.4} bits/symbol  {:.4} × entropy  {:.2} s",
                c.coder, c.bytes, c.bits_per_symbol, c.over_entropy, c.seconds
            );
        }
    }
    println!("shares: {how}; floor% = rows whose scale sits at the legacy floor 1/clip_range");
    if let Some(c) = &patch_jepa {
        println!(
            "architecture byte-patch JEPA encoder–decoder (seed 001, PR #696): {} encoder blocks with {}/{} heads, \
             {} decoder blocks with {} heads, d {}, patches of {}, latent {}; `verify --config` takes \
             {{\"architecture\": \"byte_patch_jepa\", …}} (encoder_repeats, rope_base, qk_gain_init and the \
             evaluation length are not in the weights)",
            c.encoder_layers,
            c.encoder_heads,
            c.encoder_kv_heads,
            c.decoder_layers,
            c.decoder_heads,
            c.model_dim,
            c.patch_size,
            c.latent_dim
        );
    }
    match &preset {
        Some((m, record)) if m.exact() => {
            println!(
                "architecture matches preset {} (records/track_10min_16mb/{record})",
                m.name
            )
        }
        Some((m, _)) => println!(
            "closest preset {}: {} tensors missing, {} extra, {} of another shape",
            m.name, m.missing, m.extra, m.reshaped
        ),
        None => {}
    }
    println!(
        "parameters   {params} ({:.3} bits/parameter in the file)",
        8.0 * model_bytes as f64 / params.max(1) as f64
    );
    println!("model bytes  {model_bytes}");
    if let Some(c) = &code {
        let wrapper = match (&c.wrapper, c.decoded_bytes) {
            (Some(w), Some(d)) => {
                format!(" ({w} self-extracting wrapper; decoded source {d} bytes)")
            }
            _ => " (raw source)".into(),
        };
        println!("code bytes   {}{wrapper}", c.counted_bytes);
        let verdict = if size.headroom_bytes >= 0 {
            "fits"
        } else {
            "over the cap"
        };
        println!(
            "total        {} of {}: margin {} bytes, {verdict}",
            size.total_bytes, size.budget_bytes, size.headroom_bytes
        );
    } else {
        println!(
            "total        {} without code (pass --code train_gpt.py): margin {} bytes",
            size.total_bytes, size.headroom_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(s: &TensorStats) {
    let shape = format!("{:?}", s.shape).replace(' ', "");
    let range = match (s.symbol_min, s.symbol_max) {
        (Some(a), Some(b)) => format!("[{a},{b}]"),
        _ => "-".into(),
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<34} {:>13} {:<18} {:>4} {:>9} {:>11} {:>7.3} {:>6} {:>10} {:>6} {:>9} {:>9} {:>6}",
        s.name,
        shape,
        s.scheme,
        s.bits,
        s.params,
        range,
        s.entropy_bits,
        opt(s.saturation.map(|x| format!("{:.3}", 100.0 * x))),
        opt(s.scales.as_ref().map(|x| format!("{:.3e}", x.median))),
        opt(s
            .scales
            .as_ref()
            .map(|x| format!("{:.1}", 100.0 * x.at_floor))),
        s.raw_bytes,
        opt(s.coded_bytes.map(|x| x.to_string())),
        opt(s.share.map(|x| format!("{:.1}%", 100.0 * x))),
    );
}
