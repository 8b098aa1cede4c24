//! Quantizers against the challenge's own exporter output (fixtures/artifacts/sp1024_tied.int8.ptz, written by
//! `quantize_state_dict_int8` with its float-passthrough threshold set to 1,024).

mod common;

use common::*;
use pgolf::pack::Limits;
use pgolf::pack::artifact::load_artifact;
use pgolf::pack::quantize;
use pgolf::pack::schema::Payload;

#[test]
fn percentile_int8_reproduces_the_exporter_bit_for_bit() {
    let checkpoint = load_artifact(
        &fixture("models/sp1024_tied.safetensors"),
        &Limits::default(),
    )
    .unwrap();
    let exported = load_artifact(
        &fixture("artifacts/sp1024_tied.int8.ptz"),
        &Limits::default(),
    )
    .unwrap();
    let mut quantized = 0;
    for t in &checkpoint.tensors {
        let Payload::Passthrough { values } = &t.payload else {
            panic!("a checkpoint holds plain tensors")
        };
        let ours = quantize::percentile_int8_entry(&t.name, values, 1024);
        let theirs = exported.tensors.iter().find(|e| e.name == t.name).unwrap();
        assert_eq!(ours.scheme, theirs.scheme, "{}", t.name);
        assert_eq!(
            ours.stored_bytes(),
            theirs.stored_bytes(),
            "{}: symbols and scales differ",
            t.name
        );
        quantized += matches!(ours.payload, Payload::Quantized { .. }) as usize;
    }
    assert!(
        quantized >= 20,
        "the fixture has quantized matrices ({quantized})"
    );
}
