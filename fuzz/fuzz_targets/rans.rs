#![no_main]
//! pgolf's rANS decoder on arbitrary streams, and encode → decode on arbitrary symbols.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgolf::pack::rans::decode(data, 1 << 20);
    let symbols: Vec<i8> = data.iter().map(|&b| b as i8).collect();
    assert_eq!(pgolf::pack::rans::decode(&pgolf::pack::rans::encode(&symbols), u64::MAX).unwrap(), symbols);
});
