#![no_main]
//! The SentencePiece model reader, and decoding with whatever it accepted.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = pgolf::data::sentencepiece::SpModel::from_bytes(std::path::Path::new("fuzz.model"), data) {
        let ids: Vec<u16> = (0..m.vocab_size().min(64) as u16).collect();
        let _ = m.decode(&ids);
        let _ = pgolf::data::bytes::ByteTable::from_sentencepiece(&m, 1024);
    }
});
