//! Would a context the decoder knows make the quantized symbols cheaper than order-0 rANS? (issue 19, item 3)
//!
//!     cargo bench --bench context_entropy -- ARTIFACT [ARTIFACT …]
//!
//! For every quantized matrix of each artifact, the code length of its symbols under an adaptive model (counts
//! start at ½, Krichevsky–Trofimov, so the cost of learning each context's table is paid, as a real adaptive coder
//! would pay it) with one context (order-0) and with each context a decoder can know before it decodes a symbol:
//! the previous symbol in the row, the row's scale bucket (8 quantiles of the tensor's row scales), the column group
//! (8 equal groups of columns), and previous symbol × scale bucket. Also the static order-0 entropy (what rANS with a
//! stored table approaches). Prints bits per symbol and the saving of each context against adaptive order-0.

use std::collections::HashMap;
use std::path::Path;

use pgolf::pack::Limits;
use pgolf::pack::artifact::load_artifact;

/// Adaptive KT code length in bits of `symbols` under `context(i)`.
fn adaptive_bits(symbols: &[i64], alphabet: usize, context: impl Fn(usize) -> usize) -> f64 {
    let mut counts: HashMap<usize, (Vec<f64>, f64)> = HashMap::new();
    let lo = symbols.iter().copied().min().unwrap_or(0);
    let mut bits = 0.0;
    for (i, &s) in symbols.iter().enumerate() {
        let (c, total) = counts
            .entry(context(i))
            .or_insert_with(|| (vec![0.5; alphabet], 0.5 * alphabet as f64));
        let k = (s - lo) as usize;
        bits -= (c[k] / *total).log2();
        c[k] += 1.0;
        *total += 1.0;
    }
    bits
}

fn order0_bits(symbols: &[i64]) -> f64 {
    let mut h: HashMap<i64, f64> = HashMap::new();
    for &s in symbols {
        *h.entry(s).or_default() += 1.0;
    }
    let n = symbols.len() as f64;
    -h.values().map(|&c| c * (c / n).log2()).sum::<f64>()
}

fn main() {
    let paths: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if paths.is_empty() {
        eprintln!("usage: cargo bench --bench context_entropy -- ARTIFACT [ARTIFACT …]");
        std::process::exit(1);
    }
    for path in paths {
        let a = load_artifact(Path::new(&path), &Limits::default()).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        });
        let names = [
            "static order-0",
            "adaptive order-0",
            "previous symbol",
            "row scale bucket",
            "column group",
            "previous × scale",
        ];
        let mut totals = [0.0f64; 6];
        let mut n_total = 0usize;
        for t in &a.tensors {
            let Some((symbols, scales)) = t.symbols_and_scales() else {
                continue;
            };
            if t.shape.len() != 2 || scales.len() != t.shape[0] {
                continue;
            }
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let lo = symbols.iter().copied().min().unwrap_or(0);
            let hi = symbols.iter().copied().max().unwrap_or(0);
            let alphabet = (hi - lo + 1) as usize;
            let mut sorted = scales.clone();
            sorted.sort_by(f32::total_cmp);
            let bucket_of = |r: usize| {
                let x = scales[r];
                (sorted.partition_point(|&v| v < x) * 8 / rows.max(1)).min(7)
            };
            let buckets: Vec<usize> = (0..rows).map(bucket_of).collect();
            let prev = |i: usize| {
                if i.is_multiple_of(cols) {
                    alphabet
                } else {
                    (symbols[i - 1] - lo) as usize
                }
            };
            let b = [
                order0_bits(&symbols),
                adaptive_bits(&symbols, alphabet, |_| 0),
                adaptive_bits(&symbols, alphabet, prev),
                adaptive_bits(&symbols, alphabet, |i| buckets[i / cols]),
                adaptive_bits(&symbols, alphabet, |i| (i % cols) * 8 / cols),
                adaptive_bits(&symbols, alphabet, |i| prev(i) * 8 + buckets[i / cols]),
            ];
            for (tot, x) in totals.iter_mut().zip(b) {
                *tot += x;
            }
            n_total += symbols.len();
        }
        println!("{path}: {n_total} quantized symbols");
        for (name, bits) in names.iter().zip(totals) {
            println!(
                "  {name:<18} {:.4} bits/symbol  {:+.2}% vs adaptive order-0",
                bits / n_total as f64,
                100.0 * (bits / totals[1] - 1.0)
            );
        }
    }
}
