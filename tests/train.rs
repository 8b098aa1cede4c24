//! The trainer: optimizer steps against the challenge's Muon and torch's Adam (`fixtures/generate_train.py`), a
//! loss that falls, QAT that really changes the forward, and a trained checkpoint through pack and verify.

mod common;

use candle_core::{Device, Tensor, Var};
use common::*;
use pgolf::optim::{Adam, Muon};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn optimizer_steps_match_the_reference() {
    let g = golden("train/golden_optim.json");
    for case in g["cases"].as_array().unwrap() {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let p = Var::from_tensor(
            &Tensor::from_vec(floats(&case["init"]), shape.clone(), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let kind = case["optimizer"].as_str().unwrap();
        let lr = case["lr"].as_f64().unwrap();
        let mut muon = Muon::new(1, lr, 0.95, 5);
        let mut adam = Adam::new(1, lr, 0.9, 0.95, 1e-8);
        for (step, (grad, after)) in case["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["after"].as_array().unwrap())
            .enumerate()
        {
            let grad = Tensor::from_vec(floats(grad), shape.clone(), &Device::Cpu).unwrap();
            if kind == "muon" {
                muon.step(std::slice::from_ref(&p), &[Some(grad)]).unwrap();
            } else {
                adam.step(std::slice::from_ref(&p), &[Some(grad)]).unwrap();
            }
            let ours = p.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let theirs = floats(after);
            let diffs: Vec<f32> = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).collect();
            let max = diffs.iter().copied().fold(0.0, f32::max);
            let exact = diffs.iter().filter(|&&d| d <= 1e-7).count();
            if kind == "muon" {
                // The update is bf16: a product summed in another order may round one ulp (2⁻⁸ relative) apart.
                // Orthogonalized entries are O(1/√cols), so one ulp of lr·update is below 0.04·2⁻⁸.
                assert!(max <= (lr as f32) * 2f32.powi(-8), "muon {shape:?} step {step}: max |Δ| {max}");
                assert!(
                    exact as f64 >= 0.97 * ours.len() as f64,
                    "muon {shape:?} step {step}: only {exact} of {} equal",
                    ours.len()
                );
            } else {
                assert!(max <= 1e-6, "adam step {step}: max |Δ| {max}");
            }
        }
    }
}
