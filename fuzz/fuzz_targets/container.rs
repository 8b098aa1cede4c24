#![no_main]
//! pgolf's own container with the integrity checks out of the fuzzer's way: the input is a header (JSON, up to the
//! first zero byte) and a body; the target compresses the header, writes the preamble (codec from the body's first
//! byte) and a correct sha256, so every input reaches the header, span, codec and rANS checks. Tensors that load are
//! dequantized.
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use pgolf::pack::Limits;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (header, body) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(header).unwrap();
    let header_z = z.finish().unwrap();
    let mut rest = header_z.clone();
    rest.extend_from_slice(body);
    let codec = body.first().map(|c| c % 5).unwrap_or(0);
    let mut bytes = vec![b'P', b'G', b'L', b'F', 1, codec, 1];
    bytes.extend_from_slice(&(header_z.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&rest));
    bytes.extend_from_slice(&rest);
    let limits = Limits {
        max_decompressed_bytes: 16 << 20,
        max_tensor_elements: 1 << 22,
        ..Limits::default()
    };
    if let Ok(a) = pgolf::pack::artifact::load_artifact_bytes(std::path::Path::new("fuzz.pglf"), bytes, &limits) {
        for t in &a.tensors {
            let _ = t.dequantize();
        }
    }
});
