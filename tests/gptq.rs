//! Full-Hessian GPTQ against the record's own `gptq_quantize_weight` (fixtures/generate_gptq.py ran it once on these
//! weights and Hessians): the symbols and fp16 scales must be identical.

mod common;

use common::{fixture, golden};
use pgolf::pack::gptq::gptq_quantize;

#[test]
fn gptq_matches_the_record_bit_for_bit() {
    let bytes = std::fs::read(fixture("gptq/golden_gptq.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let meta = golden("gptq/golden_gptq.json");
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (rows, cols) = (
            c["rows"].as_u64().unwrap() as usize,
            c["cols"].as_u64().unwrap() as usize,
        );
        let w = f32s(&format!("w_{name}"));
        let h = f32s(&format!("h_{name}"));
        let want_q: Vec<i8> = st
            .tensor(&format!("q_{name}"))
            .unwrap()
            .data()
            .iter()
            .map(|&b| b as i8)
            .collect();
        let want_s: Vec<f32> = st
            .tensor(&format!("s_{name}"))
            .unwrap()
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
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
