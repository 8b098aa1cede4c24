#![no_main]
//! The model config reader: JSON parsing, then the constraint checks and the shapes they imply.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = serde_json::from_slice::<pgolf::infer::config::ModelConfig>(data) {
        if cfg.validate().is_ok() {
            let _ = cfg.parameter_count();
        }
    }
});
