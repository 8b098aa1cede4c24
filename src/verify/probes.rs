//! Legality probes that run the procedure (spec §5.10): the verdict comes from re-running the whole evaluation —
//! TTT included — on a prefix of the stream with tokens changed, and comparing what each target received.
//!
//! - C1 causality: after replacing token p (never a BOS), no target before p − 1 may move.
//! - C2 normalization: at sampled targets the full row is a distribution (Σp = 1) and the recorded loss is −log p
//!   of the realized token in that row.
//! - C3 score before update: replacing target p − 1's own token leaves its whole row unchanged, and the new loss is
//!   −log p of the new token in the same row.
//! - C4 single pass: every target in [0, T) scored exactly once.
//! - TTT ordering: every optimizer step trained only on already-scored targets, none before the first score, none
//!   after the last.
//! - Determinism: two identical runs give identical receipts.
//! - Document isolation (only for procedures that claim it): replacing the last token of document N leaves every
//!   loss of document N + 1 unchanged.

use serde::Serialize;

use super::Result;
use super::ledger::RunRecord;
use super::procedure::{Procedure, run_procedure};
use super::softmax::logsumexp;
use crate::data::bytes::ByteSource;

#[derive(Clone, Debug, Serialize)]
pub struct ProbeOptions {
    /// Targets of the prefix the probes run on.
    pub prefix_targets: usize,
    /// Runs with one token replaced (each serves C1 and C3).
    pub perturbations: usize,
    /// Targets whose rows C2 checks.
    pub row_samples: usize,
    pub seed: u64,
    /// Largest change of a loss or log-probability that still counts as unchanged (C1, C3).
    pub tolerance: f64,
    /// Largest |log Σp| and |loss + log p(target)| that still counts as normalized (C2).
    pub normalization_tolerance: f64,
    /// The document-start token, never replaced.
    pub bos: u16,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            prefix_targets: 16_384,
            perturbations: 4,
            row_samples: 8,
            seed: 20240520,
            tolerance: 1e-5,
            normalization_tolerance: 1e-4,
            bos: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub id: &'static str,
    pub title: &'static str,
    pub passed: bool,
    /// What was measured, in one line.
    pub measured: String,
    /// The worst cases behind the verdict.
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub procedure: String,
    pub prefix_targets: usize,
    pub runs: usize,
    pub seconds: f64,
    pub probes: Vec<ProbeResult>,
}

impl ProbeReport {
    pub fn passed(&self, id: &str) -> Option<bool> {
        self.probes.iter().find(|p| p.id == id).map(|p| p.passed)
    }
}

/// splitmix64: the probes' positions and replacement tokens are a pure function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One replaced token: position `p` of the stream (the token target `p − 1` predicts) set to `to`.
#[derive(Clone, Copy, Debug)]
struct Perturbation {
    position: usize,
    from: u16,
    to: u16,
}

/// Runs every probe on `procedure` over the first `prefix_targets` targets of `tokens`.
pub fn run_probes(
    procedure: &dyn Procedure,
    tokens: &[u16],
    bytes: &ByteSource,
    opts: &ProbeOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ProbeReport> {
    let started = std::time::Instant::now();
    let t = opts.prefix_targets.min(tokens.len().saturating_sub(1));
    let prefix = &tokens[..t + 1];
    let vocab = procedure.vocab_size();
    let mut rng = Rng(opts.seed);

    // Positions: one per equal stratum of [2, T], skipping BOS tokens.
    let mut perturbations = Vec::new();
    let strata = opts.perturbations.max(1);
    for s in 0..opts.perturbations {
        let lo = 2 + (t - 1) * s / strata;
        let hi = (2 + (t - 1) * (s + 1) / strata).min(t + 1);
        if hi <= lo {
            continue;
        }
        let start = lo + rng.below(hi - lo);
        let Some(position) = (start..hi)
            .chain(lo..start)
            .find(|&p| prefix[p] != opts.bos)
        else {
            continue;
        };
        let from = prefix[position];
        let to = loop {
            let c = rng.below(vocab) as u16;
            if c != from && c != opts.bos {
                break c;
            }
        };
        perturbations.push(Perturbation { position, from, to });
    }
    let samples: Vec<usize> = (0..opts.row_samples).map(|_| rng.below(t)).collect();
    let wanted: Vec<usize> = samples
        .iter()
        .copied()
        .chain(perturbations.iter().map(|p| p.position - 1))
        .collect();

    // Document boundaries for the isolation probe: BOS positions p whose previous token (the end of document N) is
    // not itself a BOS, spread over the prefix.
    let boundaries: Vec<usize> = if procedure.claims_doc_isolation() {
        let all: Vec<usize> = (2..=t)
            .filter(|&p| prefix[p] == opts.bos && prefix[p - 1] != opts.bos)
            .collect();
        let k = opts.perturbations.max(1).min(all.len());
        (0..k).map(|i| all[i * all.len() / k]).collect()
    } else {
        Vec::new()
    };
    let doc_ends: Vec<Perturbation> = boundaries
        .iter()
        .map(|&b| {
            let from = prefix[b - 1];
            let to = loop {
                let c = rng.below(vocab) as u16;
                if c != from && c != opts.bos {
                    break c;
                }
            };
            Perturbation {
                position: b - 1,
                from,
                to,
            }
        })
        .collect();

    let runs = 2 + perturbations.len() + doc_ends.len();
    let mut done = 0;
    let mut tick = |progress: &mut dyn FnMut(usize, usize)| {
        done += 1;
        progress(done, runs);
    };
    let (base, _) = run_procedure(
        procedure,
        prefix,
        bytes,
        true,
        wanted.clone(),
        &mut |_, _| {},
    )?;
    tick(progress);
    let (again, _) = run_procedure(
        procedure,
        prefix,
        bytes,
        true,
        wanted.clone(),
        &mut |_, _| {},
    )?;
    tick(progress);
    let mut altered = Vec::new();
    for p in &perturbations {
        let mut toks = prefix.to_vec();
        toks[p.position] = p.to;
        let (r, _) = run_procedure(
            procedure,
            &toks,
            bytes,
            true,
            [p.position - 1],
            &mut |_, _| {},
        )?;
        altered.push(r);
        tick(progress);
    }

    let mut isolated_runs = Vec::new();
    for p in &doc_ends {
        let mut toks = prefix.to_vec();
        toks[p.position] = p.to;
        let (r, _) = run_procedure(procedure, &toks, bytes, true, [], &mut |_, _| {})?;
        isolated_runs.push(r);
        tick(progress);
    }

    let mut probes = vec![
        causality(&base, &perturbations, &altered, opts),
        normalization(&base, prefix, &samples, opts),
        score_before_update(&base, &perturbations, &altered, opts),
        single_pass(&base),
        ttt_ordering(&base, procedure.trains()),
        determinism(&base, &again),
    ];
    if procedure.claims_doc_isolation() {
        probes.push(doc_isolation(
            &base,
            prefix,
            &doc_ends,
            &isolated_runs,
            opts,
        ));
    }
    Ok(ProbeReport {
        procedure: procedure.name(),
        prefix_targets: t,
        runs,
        seconds: started.elapsed().as_secs_f64(),
        probes,
    })
}

/// The largest |a[j] − b[j]| over `range` among targets both runs scored, with its target, and how many were compared.
fn largest_change(a: &[f64], b: &[f64], range: std::ops::Range<usize>) -> ((f64, usize), usize) {
    let mut worst = (0.0f64, range.start);
    let mut compared = 0;
    for j in range {
        if a[j].is_finite() && b[j].is_finite() {
            compared += 1;
            let d = (a[j] - b[j]).abs();
            if d > worst.0 {
                worst = (d, j);
            }
        }
    }
    (worst, compared)
}

fn nll_of(r: &RunRecord) -> &[f64] {
    r.nll.as_deref().expect("probe runs keep per-target NLL")
}

fn causality(
    base: &RunRecord,
    ps: &[Perturbation],
    altered: &[RunRecord],
    o: &ProbeOptions,
) -> ProbeResult {
    let mut worst = (0.0f64, None);
    let mut compared = 0usize;
    let mut evidence = Vec::new();
    for (p, r) in ps.iter().zip(altered) {
        let (local, n) = largest_change(nll_of(base), nll_of(r), 0..p.position - 1);
        compared += n;
        evidence.push(format!(
            "token {} changed {}→{}: max |ΔNLL| {:.3e} over earlier targets{}",
            p.position,
            p.from,
            p.to,
            local.0,
            if local.0 > 0.0 {
                format!(" (target {})", local.1)
            } else {
                String::new()
            }
        ));
        if local.0 >= worst.0 {
            worst = (local.0, Some(p.position));
        }
    }
    ProbeResult {
        id: "c1_causal",
        title: "C1 causality: later tokens never change earlier losses",
        passed: !ps.is_empty() && worst.0 <= o.tolerance,
        measured: format!(
            "{} re-runs, {compared} earlier targets compared, max |ΔNLL| {:.3e} (tolerance {:.0e})",
            ps.len(),
            worst.0,
            o.tolerance
        ),
        evidence,
    }
}

fn normalization(
    base: &RunRecord,
    tokens: &[u16],
    samples: &[usize],
    o: &ProbeOptions,
) -> ProbeResult {
    let mut worst_mass = (0.0f64, 1.0f64, 0usize);
    let mut worst_loss = (0.0f64, 0usize);
    let mut checked = 0;
    let nll = nll_of(base);
    for &j in samples {
        let Some(row) = base.rows.get(&j) else {
            continue;
        };
        checked += 1;
        let lse = logsumexp(row);
        if lse.abs() >= worst_mass.0 {
            worst_mass = (lse.abs(), lse.exp(), j);
        }
        let d = (nll[j] + row[tokens[j + 1] as usize]).abs();
        if d >= worst_loss.0 {
            worst_loss = (d, j);
        }
    }
    let passed = checked > 0
        && worst_mass.0 <= o.normalization_tolerance
        && worst_loss.0 <= o.normalization_tolerance;
    ProbeResult {
        id: "c2_normalized",
        title: "C2 normalization: each scored row sums to 1 and the loss is −log p(target)",
        passed,
        measured: format!(
            "{checked} rows: worst Σp = {:.6} (target {}), worst |loss + log p(target)| {:.3e} (target {})",
            worst_mass.1, worst_mass.2, worst_loss.0, worst_loss.1
        ),
        evidence: samples
            .iter()
            .filter_map(|&j| {
                base.rows
                    .get(&j)
                    .map(|r| format!("target {j}: Σp = {:.6}", logsumexp(r).exp()))
            })
            .collect(),
    }
}

fn score_before_update(
    base: &RunRecord,
    ps: &[Perturbation],
    altered: &[RunRecord],
    o: &ProbeOptions,
) -> ProbeResult {
    let mut worst_row = 0.0f64;
    let mut worst_honesty = 0.0f64;
    let mut checked = 0;
    let mut evidence = Vec::new();
    for (p, r) in ps.iter().zip(altered) {
        let j = p.position - 1;
        let (Some(before), Some(after)) = (base.rows.get(&j), r.rows.get(&j)) else {
            continue;
        };
        checked += 1;
        let row_change = before
            .iter()
            .zip(after)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let honesty = (nll_of(r)[j] + after[p.to as usize]).abs();
        worst_row = worst_row.max(row_change);
        worst_honesty = worst_honesty.max(honesty);
        evidence.push(format!(
            "target {j} ({}→{}): max |Δ log p| over the row {:.3e}; NLL {:.6} → {:.6}, −log p_row(new) {:.6}",
            p.from,
            p.to,
            row_change,
            nll_of(base)[j],
            nll_of(r)[j],
            -after[p.to as usize]
        ));
    }
    ProbeResult {
        id: "c3_score_before_update",
        title: "C3 score before update: a target's own token never changes its predicted row",
        passed: checked > 0
            && worst_row <= o.tolerance
            && worst_honesty <= o.normalization_tolerance,
        measured: format!(
            "{checked} targets replaced: max row change {worst_row:.3e}, max |loss + log p_row(new)| {worst_honesty:.3e}"
        ),
        evidence,
    }
}

fn single_pass(base: &RunRecord) -> ProbeResult {
    let c = &base.coverage;
    ProbeResult {
        id: "c4_single_pass",
        title: "C4 single pass: every target scored exactly once",
        passed: c.exactly_once,
        measured: format!(
            "{} targets: {} once, {} never, {} more than once (up to {} times)",
            c.targets, c.scored_once, c.unscored, c.scored_more_than_once, c.max_times
        ),
        evidence: Vec::new(),
    }
}

fn ttt_ordering(base: &RunRecord, trains: bool) -> ProbeResult {
    let t = &base.training;
    let passed = t.steps_using_unscored_targets == 0
        && t.steps_before_first_score == 0
        && t.steps_after_last_score == 0;
    let mut evidence = Vec::new();
    if let Some((step, j, max)) = t.first_unscored_use {
        evidence.push(format!(
            "step {step} trained on target {j} when the highest scored target was {}",
            max.map(|m| m.to_string()).unwrap_or_else(|| "none".into())
        ));
    }
    ProbeResult {
        id: "ttt_ordering",
        title: "TTT ordering: training only on already-scored targets",
        passed,
        measured: if !trains && t.steps == 0 {
            "no optimizer steps (the procedure does not train)".into()
        } else {
            format!(
                "{} steps over {} targets: {} used unscored targets, {} before the first score, {} after the last",
                t.steps,
                t.trained_targets,
                t.steps_using_unscored_targets,
                t.steps_before_first_score,
                t.steps_after_last_score
            )
        },
        evidence,
    }
}

fn determinism(a: &RunRecord, b: &RunRecord) -> ProbeResult {
    let same = a.receipts == b.receipts;
    ProbeResult {
        id: "deterministic",
        title: "Determinism: two runs give identical receipts",
        passed: same,
        measured: format!(
            "{} receipts, chain {} vs {}",
            a.receipts.len(),
            &a.chain_head()[..16],
            &b.chain_head()[..16]
        ),
        evidence: Vec::new(),
    }
}

/// Document isolation: for each boundary, the last token of document N (position b − 1, before the BOS at b) was
/// replaced; document N + 1's targets are b .. (its end), and none of their losses may move.
fn doc_isolation(
    base: &RunRecord,
    prefix: &[u16],
    doc_ends: &[Perturbation],
    altered: &[RunRecord],
    o: &ProbeOptions,
) -> ProbeResult {
    let targets = prefix.len() - 1;
    let mut worst = 0.0f64;
    let mut compared = 0usize;
    let mut evidence = Vec::new();
    for (p, r) in doc_ends.iter().zip(altered) {
        let bos = p.position + 1;
        let end = (bos + 1..prefix.len())
            .find(|&q| prefix[q] == o.bos)
            .unwrap_or(prefix.len())
            .min(targets);
        let (local, n) = largest_change(nll_of(base), nll_of(r), bos..end);
        compared += n;
        evidence.push(format!(
            "last token of the document ending at {} changed {}→{}: max |ΔNLL| {:.3e} over the next document's \
             targets {bos}..{end}{}",
            p.position,
            p.from,
            p.to,
            local.0,
            if local.0 > o.tolerance {
                format!(" (target {})", local.1)
            } else {
                String::new()
            }
        ));
        worst = worst.max(local.0);
    }
    ProbeResult {
        id: "doc_isolation",
        title: "Document isolation: a document's losses do not depend on the document before it",
        passed: !doc_ends.is_empty() && worst <= o.tolerance,
        measured: if doc_ends.is_empty() {
            "no document boundary in the probes' prefix".into()
        } else {
            format!(
                "{} re-runs, {compared} next-document targets compared, max |ΔNLL| {worst:.3e} (tolerance {:.0e})",
                doc_ends.len(),
                o.tolerance
            )
        },
        evidence,
    }
}
