//! `pgolf inspect`: the flags, run by `pgolf::pack::inspect`, and the report printed as a table or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pgolf::pack::inspect::{InspectFlags, InspectReport, inspect};
use pgolf::pack::stats::TensorStats;

use crate::print::shown;
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
    /// Also write the weights as the artifact's own decoder returns them (dequantized, under the artifact's names,
    /// in the dtypes it records) to this safetensors file.
    #[arg(long, value_name = "OUT.safetensors")]
    dequantize: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl InspectArgs {
    fn flags(&self) -> InspectFlags {
        InspectFlags {
            file: self.file.clone(),
            code: self.code.clone(),
            no_shares: self.no_shares,
            coders: self.coders,
            dequantize: self.dequantize.clone(),
        }
    }
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let spec = args.flags().resolve()?;
    let bar = progress::bar(0, "tensors", args.json);
    let report = inspect(&spec, &pgolf::limits::current(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if args.json {
        crate::print::json_value(&report)?;
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &InspectReport) {
    let layers: Vec<String> = r.layers.iter().map(|l| l.name()).collect();
    out!(
        "{}: {} bytes, {} {}{}",
        shown(&r.file),
        r.model_bytes,
        r.container.name(),
        r.format,
        if layers.is_empty() {
            String::new()
        } else {
            format!(" under {}", layers.join(" > "))
        }
    );
    for b in &r.bundled {
        out!(
            "bundled next to the weights: \"{}\", {} bytes (inside the compressed model bytes)",
            shown(&b.name),
            b.bytes
        );
    }
    out!(
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
    for s in &r.tensors {
        print_row(s);
    }
    for (s, a) in r
        .tensors
        .iter()
        .filter_map(|s| Some((s, s.awq_lite.as_ref()?)))
    {
        let groups: Vec<String> = a
            .starts
            .iter()
            .map(|c| format!("{c}..{}", c + a.group_size))
            .collect();
        out!(
            "AWQ-lite {}: columns {} on the int{} grid with their own row scales (median {:.3e}); sat% leaves them out",
            shown(&s.name),
            groups.join(", "),
            a.bits,
            a.scale_median
        );
    }
    if let Some(c) = &r.coders {
        out!(
            "coders on the {} quantized symbols (each tensor alone; order-0 entropy {:.0} bytes):",
            c.symbols,
            c.entropy_bytes
        );
        for c in &c.sizes {
            out!(
                "  {:<34} {:>10} bytes  {:.4} bits/symbol  {:.4} × entropy  {:.2} s",
                c.coder,
                c.bytes,
                c.bits_per_symbol,
                c.over_entropy,
                c.seconds
            );
        }
    }
    out!(
        "shares: {}; floor% = rows whose scale sits at the legacy floor 1/clip_range",
        r.share_measured_as
    );
    print_architecture(r);
    print_totals(r);
    if let Some(d) = &r.dequantized {
        out!(
            "dequantized  {} tensors written to {} ({} bytes)",
            d.tensors,
            shown(&d.path),
            d.bytes
        );
    }
}

/// The architecture the tensors name: seed 001's JEPA, or the preset they match.
fn print_architecture(r: &InspectReport) {
    if let Some(c) = &r.inferred_config {
        out!(
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
    match &r.preset {
        Some(m) if m.exact => {
            out!(
                "architecture matches preset {} (records/track_10min_16mb/{})",
                m.name,
                m.record
            )
        }
        Some(m) => out!(
            "closest preset {}: {} tensors missing, {} extra, {} of another shape",
            m.name,
            m.missing,
            m.extra,
            m.reshaped
        ),
        None => {}
    }
}

/// Parameters, bytes, and the distance to the cap.
fn print_totals(r: &InspectReport) {
    out!(
        "parameters   {} ({:.3} bits/parameter in the file)",
        r.parameters,
        r.bits_per_parameter
    );
    out!("model bytes  {}", r.model_bytes);
    let size = &r.size;
    if let Some(c) = &r.code {
        let wrapper = match (&c.wrapper, c.decoded_bytes) {
            (Some(w), Some(d)) => {
                format!(" ({w} self-extracting wrapper; decoded source {d} bytes)")
            }
            _ => " (raw source)".into(),
        };
        out!("code bytes   {}{wrapper}", c.counted_bytes);
        let verdict = if size.headroom_bytes >= 0 {
            "fits"
        } else {
            "over the cap"
        };
        out!(
            "total        {} of {}: margin {} bytes, {verdict}",
            size.total_bytes,
            size.budget_bytes,
            size.headroom_bytes
        );
    } else {
        out!(
            "total        {} without code (pass --code train_gpt.py): margin {} bytes",
            size.total_bytes,
            size.headroom_bytes
        );
    }
}

fn print_row(s: &TensorStats) {
    let shape = format!("{:?}", s.shape).replace(' ', "");
    let range = match (s.symbol_min, s.symbol_max) {
        (Some(a), Some(b)) => format!("[{a},{b}]"),
        _ => "-".into(),
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    out!(
        "{:<34} {:>13} {:<18} {:>4} {:>9} {:>11} {:>7.3} {:>6} {:>10} {:>6} {:>9} {:>9} {:>6}",
        shown(&s.name),
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
