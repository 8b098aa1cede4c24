#![no_main]
//! One outer decoder (zlib, zstd, xz, raw LZMA2, brotli; chosen by the first byte) forced on the rest of the input, the
//! byte shuffle round trip, and magic sniffing through every layer under one decode budget.
use libfuzzer_sys::fuzz_target;
use pgolf::pack::outer::{self, Layer};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.ptz");
    let limit = 1 << 20;
    if let Some((&pick, rest)) = data.split_first() {
        let layer = [Layer::Zlib, Layer::Zstd, Layer::Xz, Layer::RawLzma2, Layer::Brotli][pick as usize % 5].clone();
        let _ = outer::decompress_with(path, &layer, rest, limit);
    }
    let stride = data.first().map(|b| (*b as usize % 8) + 1).unwrap_or(1);
    assert_eq!(outer::unshuffle(&outer::shuffle(data, stride), stride), data);
    let mut budget = pgolf::pack::decode_budget::DecodeBudget::new(path, limit);
    let _ = outer::peel(path, data.to_vec(), &mut budget, pgolf::pack::torchfile::is_zip);
});
