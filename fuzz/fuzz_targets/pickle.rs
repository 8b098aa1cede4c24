#![no_main]
//! The restricted unpickler on raw pickle bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgolf::pack::pickle::unpickle(data, &pgolf::pack::Limits::default());
});
