//! Artifacts of the final leaderboard's export code (`fixtures/generate_final_rows.py`): #2014's own
//! `gptq_mixed_quantize` with AWQ-lite and LQER asymmetric, read by pgolf and dequantized bit for bit as its own
//! `dequantize_mixed` does; every malformed AWQ-lite field refused with the file and the field named.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden_2014() -> Value {
    golden("artifacts/golden_final_2014.json")
}

#[test]
fn the_2014_export_dequantizes_bit_for_bit_as_its_own_decoder() {
    let g = golden_2014();
    let art = fixture("artifacts/final_2014_awq.xz.ptz");
    // Every tensor of the record's decoder, with the record's names, shapes, dtypes and bytes.
    let want = g["tensors"].as_array().unwrap();
    let r = assert_dequantizes_to(&art, want);
    // inspect names the AWQ-lite groups: the scheme carries the record's meta parts, and the fields are reported.
    let awq = g["awq"].as_object().unwrap();
    assert_eq!(
        awq.len(),
        1,
        "top-1 group over the model, as the record selects"
    );
    let (name, fields) = awq.iter().next().unwrap();
    let row = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name.as_str())
        .unwrap();
    let meta = g["meta"][name.as_str()].as_str().unwrap();
    assert!(meta.contains("+awqgrpint8"), "{meta}");
    assert!(
        row["scheme"].as_str().unwrap().contains("+awqgrpint8"),
        "{row}"
    );
    assert_eq!(row["awq_lite"]["bits"], 8);
    assert_eq!(row["awq_lite"]["group_size"], fields["size"]);
    assert_eq!(row["awq_lite"]["starts"], fields["starts"]);
    assert_eq!(
        r["dequantized"]["tensors"].as_u64().unwrap() as usize,
        want.len()
    );
    // The same on the terminal: the groups' columns.
    let text = String::from_utf8(pgolf(&["inspect", s(&art), "--no-shares"]).stdout).unwrap();
    let start = fields["starts"][0].as_u64().unwrap();
    let size = fields["size"].as_u64().unwrap();
    assert!(
        text.contains(&format!(
            "AWQ-lite {name}: columns {start}..{} on the int8 grid",
            start + size
        )),
        "{text}"
    );
}

#[test]
fn every_malformed_awq_lite_field_is_refused_by_name() {
    for (case, says) in [
        (
            "unknown_field",
            "\"x.weight.awqg_extra\": a field pgolf does not know",
        ),
        (
            "fields_without_meta",
            "\"x.weight.awqg_start\": a field pgolf does not know",
        ),
        (
            "past_columns",
            "x.weight: AWQ-lite groups [96] of 64 columns do not fit 128 columns",
        ),
        (
            "size_zero",
            "x.weight: AWQ-lite awqg_size [] is not one positive integer",
        ),
        (
            "scale_short",
            "x.weight: AWQ-lite awqg_s_hi float16 [1] is not one scale per row of 2",
        ),
        (
            "symbols_off_grid",
            "x.weight: AWQ-lite symbols outside the int4 grid [-7, 7]",
        ),
        (
            "unknown_meta_part",
            "\"x.weight\": meta part \"rowperm\" of \"gptq (int6)+awqgrpint8+rowperm\" is not one pgolf knows",
        ),
    ] {
        let f = fixture(&format!("artifacts/final_2014_hostile_{case}.xz.ptz"));
        let e = pgolf_err(&["inspect", s(&f)]);
        assert!(
            e.contains(&format!("final_2014_hostile_{case}.xz.ptz")),
            "{case}: {e}"
        );
        assert!(e.contains(says), "{case}: {e}");
    }
}

#[test]
fn dequantize_never_overwrites_an_input_and_leaves_nothing_on_error() {
    let art = fixture("artifacts/final_2014_awq.xz.ptz");
    let e = pgolf_err(&["inspect", s(&art), "--dequantize", s(&art)]);
    assert!(e.contains("final_2014_awq.xz.ptz"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("deq.safetensors");
    let bad = fixture("artifacts/final_2014_hostile_unknown_field.xz.ptz");
    pgolf_err(&["inspect", s(&bad), "--dequantize", s(&out)]);
    assert!(!out.exists(), "no partial output");
}

/// `inspect --dequantize` of `art` against a golden list (name, shape, dtype, SHA-256 of the little-endian bytes);
/// returns the inspect report.
fn assert_dequantizes_to(art: &std::path::Path, want: &[Value]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("deq.safetensors");
    let r = pgolf_json(&["inspect", s(art), "--dequantize", s(&out), "--json"]);
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), want.len());
    for t in want {
        let name = t["name"].as_str().unwrap();
        let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        assert_eq!(
            format!("{:?}", view.dtype()),
            match t["dtype"].as_str().unwrap() {
                "float32" => "F32",
                "float16" => "F16",
                "bfloat16" => "BF16",
                other => panic!("{other}"),
            },
            "{name}"
        );
        let digest: String = Sha256::digest(view.data())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            t["sha256"].as_str().unwrap(),
            "{name}: not the record's bytes"
        );
    }
    r
}

#[test]
fn the_2135_pgrp_v2_frame_reads_bit_for_bit_as_its_own_unpacker() {
    let g = golden("artifacts/golden_final_2135.json");
    // The writer's brotli fallback (Q section method 0): no external program needed.
    let brotli = fixture("artifacts/final_2135_pgrp2_brotli.ptz");
    let want = g["artifacts"]["final_2135_pgrp2_brotli.ptz"]["tensors"]
        .as_array()
        .unwrap();
    let r = assert_dequantizes_to(&brotli, want);
    assert_eq!(r["container"], "pgrp");
    assert_eq!(
        r["layers"][0],
        serde_json::json!({"layer": "per_group_v2", "q_section": "brotli"})
    );
    let scheme = |r: &Value, name: &str| {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["scheme"]
            .clone()
    };
    assert_eq!(scheme(&r, "tok_emb.weight"), "int7_per_row+lqer_asym");
    // lrzip's Q section (method 1) where the program is installed; its absence named otherwise.
    let lrz = fixture("artifacts/final_2135_pgrp2_lrzip.ptz");
    if lrzip_installed() {
        let want = g["artifacts"]["final_2135_pgrp2_lrzip.ptz"]["tensors"]
            .as_array()
            .unwrap();
        assert_dequantizes_to(&lrz, want);
    } else {
        let e = pgolf_err(&["inspect", s(&lrz)]);
        assert!(e.contains("lrzip") && e.contains("not on PATH"), "{e}");
    }
}

#[test]
fn every_malformed_pgrp_v2_frame_is_refused_by_name() {
    let good = std::fs::read(fixture("artifacts/final_2135_pgrp2_brotli.ptz")).unwrap();
    let name_len = u16::from_le_bytes([good[12], good[13]]) as usize;
    let first_perm = 12 + 2 + name_len + 8;
    let method_at = {
        // Walk the declarations to the method byte.
        let n = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
        let mut at = 12;
        for _ in 0..n {
            let len = u16::from_le_bytes([good[at], good[at + 1]]) as usize;
            let rows =
                u32::from_le_bytes(good[at + 2 + len..at + 6 + len].try_into().unwrap()) as usize;
            at += 2 + len + 8 + 2 * rows;
        }
        at
    };
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "run past the end of the file",
        ),
        (
            "trailing",
            [good.as_slice(), b"x"].concat(),
            "1 bytes follow the remainder",
        ),
        (
            "method",
            {
                let mut b = good.clone();
                b[method_at] = 7;
                b
            },
            "Q section compressed by method 7",
        ),
        (
            "permutation",
            {
                let mut b = good.clone();
                b[first_perm] = b[first_perm + 2];
                b[first_perm + 1] = b[first_perm + 3];
                b
            },
            "the row permutation is not a permutation",
        ),
        (
            "count",
            {
                let mut b = good.clone();
                b[8..12].copy_from_slice(&100_000u32.to_le_bytes());
                b
            },
            "100000 matrices declared",
        ),
    ];
    for (case, bytes, says) in cases {
        let p = tmp.path().join(format!("pgrp2_{case}.ptz"));
        std::fs::write(&p, bytes).unwrap();
        let e = pgolf_err(&["inspect", s(&p)]);
        assert!(
            e.contains(&format!("pgrp2_{case}.ptz")) && e.contains(says),
            "{case}: {e}"
        );
    }
}
