#![no_main]
//! Each outer decoder (zlib, zstd, xz, raw LZMA2, brotli) forced on the input, the byte shuffle, and magic sniffing.
use libfuzzer_sys::fuzz_target;
use pgolf::pack::outer::{self, Layer};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.ptz");
    let limit = 1 << 20;
    for layer in [Layer::Zlib, Layer::Zstd, Layer::Xz, Layer::RawLzma2, Layer::Brotli] {
        let _ = outer::decompress_with(path, &layer, data, limit);
    }
    let stride = data.first().map(|b| (*b as usize % 8) + 1).unwrap_or(1);
    assert_eq!(outer::unshuffle(&outer::shuffle(data, stride), stride), data);
    let mut budget = pgolf::pack::decode_budget::DecodeBudget::new(path, limit);
    let _ = outer::peel(path, data.to_vec(), &mut budget, pgolf::pack::torchfile::is_zip);
});
