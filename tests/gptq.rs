//! Full-Hessian GPTQ against the record's own `gptq_quantize_weight` (fixtures/generate_gptq.py ran it once on these
//! weights and Hessians): the symbols and fp16 scales must be identical.

mod common;

use common::{fixture, golden};
use pgolf::pack::gptq::gptq_quantize;
use safetensors::SafeTensors;

fn goldens() -> Vec<u8> {
    std::fs::read(fixture("gptq/golden_gptq.safetensors")).unwrap()
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn f16s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

fn i8s(st: &SafeTensors, name: &str) -> Vec<i8> {
    st.tensor(name)
        .unwrap()
        .data()
        .iter()
        .map(|&b| b as i8)
        .collect()
}

#[test]
fn gptq_matches_the_record_bit_for_bit() {
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let meta = golden("gptq/golden_gptq.json");
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (rows, cols) = (
            c["rows"].as_u64().unwrap() as usize,
            c["cols"].as_u64().unwrap() as usize,
        );
        let w = f32s(&st, &format!("w_{name}"));
        let h = f32s(&st, &format!("h_{name}"));
        let want_q = i8s(&st, &format!("q_{name}"));
        let want_s = f16s(&st, &format!("s_{name}"));
        let (q, s) = gptq_quantize(
            &w,
            rows,
            cols,
            &h,
            c["clip_sigmas"].as_f64().unwrap() as f32,
            c["clip_range"].as_i64().unwrap() as i32,
            c["block_size"].as_u64().unwrap() as usize,
        )
        .unwrap();
        assert_eq!(s, want_s, "{name}: scales");
        let differ = q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{name}: {differ} of {} symbols differ", q.len());
        // Dead columns quantize to zero.
        for d in c["dead_columns"].as_array().unwrap() {
            let d = d.as_u64().unwrap() as usize;
            assert!(
                (0..rows).all(|r| q[r * cols + d] == 0),
                "{name}: dead column {d}"
            );
        }
    }
}

/// LQER against the record's `_lqer_pack_asym` / `_lqer_pack` on the record's own SVD factors (bit-exact), and
/// pgolf's rank-4 correction A·B within 1e-6 of the exact one (f64 SVD) on each case's real quantization error.
#[test]
fn lqer_packs_like_the_record_and_its_svd_is_optimal() {
    use pgolf::pack::lqer::{low_rank, pack_asym, pack_sym};
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let meta = golden("gptq/golden_gptq.json");
    for c in meta["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (rows, cols) = (
            c["rows"].as_u64().unwrap() as usize,
            c["cols"].as_u64().unwrap() as usize,
        );
        let r = c["lqer_rank"].as_u64().unwrap() as usize;
        let (a, b) = (
            f32s(&st, &format!("la_{name}")),
            f32s(&st, &format!("lb_{name}")),
        );
        let (qa, sa, qb, sb) = pack_asym(&a, &b, 64);
        assert_eq!(qa, i8s(&st, &format!("asym_qa_{name}")), "{name}: asym A");
        assert_eq!(
            vec![sa],
            f16s(&st, &format!("asym_sa_{name}")),
            "{name}: asym A scale"
        );
        assert_eq!(qb, i8s(&st, &format!("asym_qb_{name}")), "{name}: asym B");
        assert_eq!(
            sb,
            f16s(&st, &format!("asym_sb_{name}")),
            "{name}: asym B scales"
        );
        let (qa, sa, qb, sb) = pack_sym(&a, r, &b, cols, 4);
        assert_eq!(qa, i8s(&st, &format!("sym_qa_{name}")), "{name}: sym A");
        assert_eq!(
            sa,
            f16s(&st, &format!("sym_sa_{name}")),
            "{name}: sym A scales"
        );
        assert_eq!(qb, i8s(&st, &format!("sym_qb_{name}")), "{name}: sym B");
        assert_eq!(
            sb,
            f16s(&st, &format!("sym_sb_{name}")),
            "{name}: sym B scales"
        );
        // pgolf's own factors of the same error: the rank-4 residual within 0.1% of torch's (the optimum).
        let e = f32s(&st, &format!("e_{name}"));
        let (pa, pb) = low_rank(&e, rows, cols, r);
        let mut res = 0f64;
        for i in 0..rows {
            for j in 0..cols {
                let p: f32 = (0..r).map(|t| pa[i * r + t] * pb[t * cols + j]).sum();
                res += ((e[i * cols + j] - p) as f64).powi(2);
            }
        }
        // The correction itself (A·B, free of the singular vectors' signs) within 1e-6 of the exact one (torch's
        // SVD in f64; its f32 SVD, whose factors are packed above, is itself up to 1.3e-6 off on these cases).
        let exact: Vec<f64> = st
            .tensor(&format!("ab64_{name}"))
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut worst = 0f64;
        for i in 0..rows {
            for j in 0..cols {
                let p: f32 = (0..r).map(|t| pa[i * r + t] * pb[t * cols + j]).sum();
                worst = worst.max((p as f64 - exact[i * cols + j]).abs());
            }
        }
        assert!(
            worst <= 1e-6,
            "{name}: A·B is {worst:e} off the exact rank-{r} correction"
        );
        let (res, best) = (res.sqrt(), c["svd_residual"].as_f64().unwrap());
        assert!(
            res <= best * 1.001,
            "{name}: residual {res} vs torch {best}"
        );
    }
}

/// The int8 attention-gate rows against the record's `_quantize_gate_int8_row`, and pack routing a gate there.
#[test]
fn gate_rows_match_the_record() {
    use pgolf::pack::quantize::gate_int8_rows;
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["sparse", "dense"] {
        let t = st.tensor(&format!("gate_w_{name}")).unwrap();
        let (rows, cols) = (t.shape()[0], t.shape()[1]);
        let w: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let q = gate_int8_rows("blocks.0.attn.attn_gate_w", &w, rows, cols);
        let (syms, scales) = q.symbols_and_scales().unwrap();
        let want_q: Vec<i64> = st
            .tensor(&format!("gate_q_{name}"))
            .unwrap()
            .data()
            .iter()
            .map(|&b| b as i8 as i64)
            .collect();
        let want_s = f16s(&st, &format!("gate_s_{name}"));
        assert_eq!(syms, want_q, "{name}");
        assert_eq!(scales, want_s, "{name}");
        assert_eq!(q.scheme, "int8_gate_per_row");
    }
}
