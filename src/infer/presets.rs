//! Config presets for the record stacks, at full size, with the values each record ran with (its train log's
//! hyperparameter dump or its README's command, which override its code defaults), and the evaluation each record
//! declared. `docs/ARCHITECTURES.md` lists them; `pgolf inspect` names the preset a state dict matches.

use super::config::{FinalLane, ModelConfig, SmearGate};

/// How a record evaluates: what `pgolf verify --preset NAME` runs when no evaluation flag is given.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredEval {
    pub seq_len: usize,
    /// Sliding stride (None: the doc-isolated flat form).
    pub stride: Option<usize>,
    /// The older sliding form that re-scores the tail (`--legacy-sliding`).
    pub legacy_sliding: bool,
    /// VarLen document-isolated flat buffers of this many sequences (`--doc-isolated --batch-seqs N`).
    pub doc_isolated_batch_seqs: Option<usize>,
    /// The record scores with a CaseOps byte sidecar (`--byte-sidecar`).
    pub byte_sidecar: bool,
    /// What the record's reported (final) score runs over that form.
    pub final_score: FinalScore,
    /// The ranks the reported run had (8×H100); per-rank ranges and schedules depend on it.
    pub world_size: usize,
}

/// The procedure behind a record's reported score.
#[derive(Clone, Debug, PartialEq)]
pub enum FinalScore {
    /// The window form alone.
    Windows,
    /// Score-first TTT over the windows at this SGD learning rate (TTT_LR; the other knobs the records' shared
    /// defaults: 3 epochs, chunks of 32,768, momentum 0.9, clip 1.0).
    ScoreFirstTtt { lr: f64 },
    /// rec/2026-04-27's `eval_val_ttt_phased`: per-document LoRA TTT with global score-first SGD phases.
    PhasedLoraTtt,
}

pub struct Preset {
    pub name: &'static str,
    /// `records/track_10min_16mb/<folder>`.
    pub record: &'static str,
    pub summary: &'static str,
    /// `model_params` as the record's train log prints it.
    pub logged_parameters: usize,
    pub config: ModelConfig,
    pub eval: DeclaredEval,
}

fn base_11x512() -> ModelConfig {
    ModelConfig {
        vocab_size: 1024,
        num_layers: 11,
        model_dim: 512,
        num_heads: 8,
        num_kv_heads: 4,
        mlp_mult: 3.0,
        train_seq_len: 2048,
        mlp_negative_slope: 0.5,
        rope_dims: 16,
        ln_scale: true,
        ..ModelConfig::default()
    }
}

fn sliding(legacy: bool, final_score: FinalScore) -> DeclaredEval {
    DeclaredEval {
        seq_len: 2048,
        stride: Some(64),
        legacy_sliding: legacy,
        doc_isolated_batch_seqs: None,
        byte_sidecar: false,
        final_score,
        world_size: 8,
    }
}

/// Every preset.
pub fn presets() -> Vec<Preset> {
    let rec_03_23 = ModelConfig {
        // Rotary is built with a hard-coded train_seq_len of 1024, and evaluation runs at 2048: the NTK base applies.
        rope_ntk_train_seq_len: Some(1024),
        xsa_last_n: 4,
        bigram_vocab_size: 1536,
        bigram_dim: 128,
        smear_gate: SmearGate::V1,
        ve_layers: vec![9, 10],
        ve_dim: 128,
        ..base_11x512()
    };
    let rec_03_29 = ModelConfig {
        xsa_last_n: 11,
        bigram_vocab_size: 2816,
        bigram_dim: 112,
        ..rec_03_23.clone()
    };
    let sp8192 = ModelConfig {
        vocab_size: 8192,
        mlp_mult: 4.0,
        xsa_last_n: 11,
        skip_gates: true,
        num_loops: 2,
        loop_start: 3,
        loop_end: 5,
        ..base_11x512()
    };
    let rec_04_09 = ModelConfig {
        qk_gain_init: 5.25,
        rope_ntk_train_seq_len: Some(2048),
        parallel_residual_start: Some(7),
        ..sp8192.clone()
    };
    let rec_04_27 = ModelConfig {
        qk_gain_init: 5.0,
        // ROPE_YARN=0: never rescaled.
        rope_ntk_train_seq_len: None,
        parallel_start_layer: Some(8),
        parallel_final_lane: FinalLane::Mean,
        smear_gate: SmearGate::V2,
        smear_gate_bos_fix: true,
        gate_window: 12,
        sparse_attn_gate: true,
        sparse_attn_gate_scale: 0.5,
        caseops: true,
        ..sp8192
    };
    vec![
        Preset {
            name: "baseline",
            record: "2026-03-17_NaiveBaseline",
            summary: "the challenge's baseline: 9×512 sp1024, relu², U-Net skips, tied embedding",
            logged_parameters: 17_059_912,
            config: ModelConfig::default(),
            eval: DeclaredEval {
                seq_len: 1024,
                stride: None,
                legacy_sliding: false,
                doc_isolated_batch_seqs: None,
                byte_sidecar: false,
                final_score: FinalScore::Windows,
                world_size: 8,
            },
        },
        Preset {
            name: "rec-2026-03-23",
            record: "2026-03-23_LeakyReLU_LegalTTT_ParallelMuon",
            summary: "LeakyReLU(0.5)², legal score-first TTT, parameter banks; 11×512 sp1024, XSA last 4, \
                      BigramHash 1536×128, SmearGate v1, VE128 on 9,10",
            logged_parameters: 26_928_220,
            config: rec_03_23,
            eval: sliding(true, FinalScore::ScoreFirstTtt { lr: 0.002 }),
        },
        Preset {
            name: "rec-2026-03-29",
            record: "2026-03-29_Loader_FullGPTQ_XSA11_BigramHash2816",
            summary: "full-Hessian GPTQ, XSA on all 11 layers, BigramHash 2816×112",
            logged_parameters: 27_038_812,
            config: rec_03_29,
            eval: sliding(true, FinalScore::Windows),
        },
        Preset {
            name: "rec-2026-04-09",
            record: "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT",
            summary: "sp8192, blocks 3–5 looped 3×, GPT-J parallel residuals from block 7, skip gates, q_gain 5.25, \
                      legal TTT",
            logged_parameters: 35_944_536,
            config: rec_04_09,
            eval: sliding(false, FinalScore::ScoreFirstTtt { lr: 0.005 }),
        },
        Preset {
            name: "rec-2026-04-27",
            record: "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
            summary: "CaseOps sp8192, two-lane parallel residuals from block 8, SmearGate v2 with the BOS fix, \
                      SparseAttnGate (scale 0.5), phased LoRA TTT",
            logged_parameters: 35_945_671,
            config: rec_04_27,
            eval: DeclaredEval {
                seq_len: 2048,
                stride: None,
                legacy_sliding: false,
                doc_isolated_batch_seqs: Some(32),
                byte_sidecar: true,
                final_score: FinalScore::PhasedLoraTtt,
                world_size: 8,
            },
        },
    ]
}

pub fn preset(name: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.name == name)
}

/// How a state dict's tensor names and shapes compare with a preset's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresetMatch {
    pub name: &'static str,
    /// Names the preset expects that the state dict lacks.
    pub missing: usize,
    /// Names the state dict has that the preset does not expect.
    pub extra: usize,
    /// Names both have, with different shapes.
    pub reshaped: usize,
}

impl PresetMatch {
    pub fn exact(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.reshaped == 0
    }

    /// Names first (they are the architecture), shapes second (they are mostly widths).
    fn distance(&self) -> (usize, usize) {
        (self.missing + self.extra, self.reshaped)
    }
}

/// The preset closest to a state dict given as (name, shape) pairs (parameter banks are split into per-block
/// names first), or None when nothing is shared. Exact when names and shapes all agree.
pub fn closest_preset(tensors: &[(String, Vec<usize>)]) -> Option<PresetMatch> {
    let tensors = &super::weights::unbank_shapes(tensors);
    let have: std::collections::HashMap<&str, &Vec<usize>> =
        tensors.iter().map(|(n, s)| (n.as_str(), s)).collect();
    presets()
        .iter()
        .map(|p| {
            let want = p.config.expected_tensors();
            let missing = want
                .iter()
                .filter(|(n, _)| !have.contains_key(n.as_str()))
                .count();
            let reshaped = want
                .iter()
                .filter(|(n, s)| have.get(n.as_str()).is_some_and(|h| *h != s))
                .count();
            let names: std::collections::HashSet<&str> =
                want.iter().map(|(n, _)| n.as_str()).collect();
            let extra = tensors
                .iter()
                .filter(|(n, _)| !names.contains(n.as_str()))
                .count();
            PresetMatch {
                name: p.name,
                missing,
                extra,
                reshaped,
            }
        })
        .filter(|m| m.missing < tensors.len().max(1))
        .min_by_key(|m| m.distance())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_have_the_logged_parameter_counts() {
        for p in presets() {
            p.config
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(
                p.config.parameter_count(),
                p.logged_parameters,
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn each_preset_matches_itself_exactly() {
        for p in presets() {
            let m = closest_preset(&p.config.expected_tensors()).unwrap();
            assert_eq!(m.name, p.name);
            assert!(m.exact());
        }
    }

    #[test]
    fn banked_names_match_like_unbanked_ones() {
        let p = preset("rec-2026-03-23").unwrap();
        let (l, d, kv, h) = (11, 512, 256, 1536);
        let mut t: Vec<(String, Vec<usize>)> = p
            .config
            .expected_tensors()
            .into_iter()
            .filter(|(n, _)| {
                !(n.contains(".attn.c_") || n.contains(".attn.proj.") || n.contains(".mlp."))
            })
            .collect();
        t.push(("qo_bank".into(), vec![2 * l, d, d]));
        t.push(("kv_bank".into(), vec![2 * l, kv, d]));
        t.push(("mlp_up_bank".into(), vec![l, h, d]));
        t.push(("mlp_down_bank".into(), vec![l, d, h]));
        let m = closest_preset(&t).unwrap();
        assert_eq!(m.name, "rec-2026-03-23");
        assert!(m.exact(), "{m:?}");
    }

    #[test]
    fn a_near_miss_is_reported_with_its_differences() {
        let mut t = preset("rec-2026-03-29").unwrap().config.expected_tensors();
        t.retain(|(n, _)| n != "smear.gate");
        t.push(("mystery".into(), vec![3]));
        let m = closest_preset(&t).unwrap();
        assert_eq!(
            (m.name, m.missing, m.extra, m.reshaped),
            ("rec-2026-03-29", 1, 1, 0)
        );
    }
}
