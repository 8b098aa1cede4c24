#![no_main]
//! #2135's PGRP version-2 frame (`pack::pgrp::decode_v2`): the input follows `PGRP` and the version word 2, so every
//! execution reaches the declarations (names, shapes, permutations), the section lengths, the brotli Q section and
//! remainder, the BSHF layer and the restricted unpickler. `lrzip` is kept off PATH: a Q section marked lrzip ends in
//! the missing-program error at once instead of a process per input. Objects that load go through the `{"w","m"}`
//! schema and are dequantized.
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use pgolf::pack::Limits;
use pgolf::pack::decode_budget::DecodeBudget;

static NO_LRZIP: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    NO_LRZIP.call_once(|| {
        // SAFETY: set once, before this process reads the environment from another thread (libFuzzer runs the
        // target on one thread).
        unsafe { std::env::set_var("PATH", "") };
    });
    let mut bytes = b"PGRP".to_vec();
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(data);
    let path = std::path::Path::new("fuzz.ptz");
    let limits = Limits {
        max_decompressed_bytes: 16 << 20,
        max_tensor_elements: 1 << 22,
        ..Limits::default()
    };
    let mut budget = DecodeBudget::new(path, limits.max_decompressed_bytes);
    if let Ok(obj) = pgolf::pack::pgrp::decode_v2(path, &bytes, &limits, &mut budget)
        && let Ok((_, tensors)) = pgolf::pack::schema::interpret(path, &obj)
    {
        for t in &tensors {
            let _ = t.dequantize();
        }
    }
});
