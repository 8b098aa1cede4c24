#![no_main]
//! The challenge shard parser.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgolf::data::shard::parse_shard(std::path::Path::new("fuzz.bin"), data, &pgolf::limits::Limits::default());
});
