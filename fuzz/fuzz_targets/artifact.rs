#![no_main]
//! Every artifact reader behind `pgolf inspect`/`verify`: safetensors, pgolf containers, torch zips (pickle), the
//! outer layers and PGRP; tensors that load are dequantized.
use libfuzzer_sys::fuzz_target;
use pgolf::pack::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_decompressed_bytes: 16 << 20,
        max_tensor_elements: 1 << 22,
        max_external_seconds: 2,
        ..Limits::default()
    };
    if let Ok(a) = pgolf::pack::artifact::load_artifact_bytes(std::path::Path::new("fuzz.ptz"), data.to_vec(), &limits) {
        for t in &a.tensors {
            let _ = t.dequantize();
        }
    }
});
