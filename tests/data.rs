//! The data layer against golden values computed by `fixtures/generate_data.py` with the reference
//! `sentencepiece` package.

mod common;

use common::*;
use pgolf::data::audit::{self, Severity};
use pgolf::data::bytes::{ByteSource, ByteTable};
use pgolf::data::sentencepiece::{ModelProto, SpModel};
use pgolf::data::shard::{self, count_documents, document_ranges, usable_targets};
use pgolf::data::tokenizer::Tokenizer;
use serde_json::Value;

struct Variant {
    name: &'static str,
    tokenizer: String,
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "sp1024",
            tokenizer: s(&tokenizer_path(1024)).into(),
        },
        Variant {
            name: "sp8192",
            tokenizer: s(&tokenizer_path(8192)).into(),
        },
        Variant {
            name: "byte260",
            tokenizer: "byte260".into(),
        },
    ]
}

fn val_glob(name: &str) -> String {
    format!(
        "{}/fineweb_val_*.bin",
        fixture(&format!("data/{name}")).display()
    )
}

fn as_u16s(v: &Value) -> Vec<u16> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u16)
        .collect()
}

fn as_bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_bool().unwrap())
        .collect()
}

#[test]
fn byte_tables_match_the_reference_exactly() {
    for v in variants() {
        let g = golden(&format!("data/golden_{}.json", v.name));
        let tok = Tokenizer::load(&v.tokenizer).unwrap();
        assert_eq!(
            tok.vocab_size() as u64,
            g["vocab_size"].as_u64().unwrap(),
            "{}",
            v.name
        );
        let table = tok.byte_table(tok.vocab_size());
        assert_eq!(
            table.base_bytes,
            as_u16s(&g["base_bytes"]),
            "{} base_bytes",
            v.name
        );
        assert_eq!(
            table.has_leading_space,
            as_bools(&g["has_leading_space"]),
            "{} has_leading_space",
            v.name
        );
        assert_eq!(
            table.is_boundary,
            as_bools(&g["is_boundary"]),
            "{} is_boundary",
            v.name
        );
    }
}

#[test]
fn token_counts_and_target_bytes_match_the_reference() {
    for v in variants() {
        let g = golden(&format!("data/golden_{}.json", v.name));
        let tok = Tokenizer::load(&v.tokenizer).unwrap();
        let all = shard::read_shards(
            &shard::validation_files(&val_glob(v.name)).unwrap(),
            &pgolf::limits::Limits::default(),
        )
        .unwrap();
        assert_eq!(
            all.len() as u64,
            g["tokens"].as_u64().unwrap(),
            "{} tokens",
            v.name
        );
        assert_eq!(
            count_documents(&all) as u64,
            g["documents"].as_u64().unwrap(),
            "{} documents",
            v.name
        );
        assert_eq!(
            *all.iter().max().unwrap() as u64,
            g["max_token"].as_u64().unwrap()
        );
        let src = ByteSource::Table(tok.byte_table(tok.vocab_size()));
        assert_eq!(
            src.bytes_of_targets(&all, 0..all.len() - 1),
            g["all_target_bytes"].as_u64().unwrap(),
            "{}",
            v.name
        );

        let seq_len = g["seq_len"].as_u64().unwrap() as usize;
        let val = shard::load_validation_tokens(
            &val_glob(v.name),
            seq_len,
            &pgolf::limits::Limits::default(),
        )
        .unwrap();
        let targets = val.len() - 1;
        assert_eq!(
            targets as u64,
            g["targets"].as_u64().unwrap(),
            "{} targets",
            v.name
        );
        assert_eq!(targets, usable_targets(all.len(), seq_len));
        assert_eq!(
            src.bytes_of_targets(&val, 0..targets),
            g["target_bytes"].as_u64().unwrap(),
            "{}",
            v.name
        );
    }
}

#[test]
fn per_document_bytes_match_the_reference_decoder() {
    for v in variants() {
        let g = golden(&format!("data/golden_{}.json", v.name));
        let tok = Tokenizer::load(&v.tokenizer).unwrap();
        let all = shard::read_shards(
            &shard::validation_files(&val_glob(v.name)).unwrap(),
            &pgolf::limits::Limits::default(),
        )
        .unwrap();
        let table = tok.byte_table(tok.vocab_size());
        let docs = g["documents_detail"].as_array().unwrap();
        let ranges = document_ranges(&all);
        assert_eq!(ranges.len(), docs.len());
        for (i, (r, d)) in ranges.iter().zip(docs).enumerate() {
            assert_eq!(
                r.len() as u64,
                d["tokens"].as_u64().unwrap(),
                "{} doc {i} tokens",
                v.name
            );
            let table_bytes: u64 = (r.start..r.end - 1)
                .map(|j| table.target_bytes(all[j], all[j + 1]) as u64)
                .sum();
            assert_eq!(
                table_bytes,
                d["table_bytes"].as_u64().unwrap(),
                "{} doc {i} table bytes",
                v.name
            );
            let decoded = tok.decode(&all[r.start + 1..r.end]).len() as u64;
            assert_eq!(
                decoded,
                d["decoded_bytes"].as_u64().unwrap(),
                "{} doc {i} decoded bytes",
                v.name
            );
        }
        let a = audit::audit(&tok, &table, &all);
        assert_eq!(
            a.unknown_targets,
            g["unknown_targets"].as_u64().unwrap(),
            "{}",
            v.name
        );
        assert!(
            a.passed(),
            "{}: canonical table must pass: {:?}",
            v.name,
            a.findings
        );
        let expected_mismatches = docs
            .iter()
            .filter(|d| d["table_bytes"].as_u64() != d["decoded_bytes"].as_u64())
            .count();
        assert_eq!(a.documents_mismatched, expected_mismatches, "{}", v.name);
    }
}

#[test]
fn sentencepiece_piece_types_match_the_reference() {
    for vocab in [1024usize, 8192] {
        let g = golden(&format!("data/golden_sp{vocab}.json"));
        let m = SpModel::load(&tokenizer_path(vocab)).unwrap();
        use pgolf::data::sentencepiece::PieceType::*;
        let c = &g["piece_counts"];
        assert_eq!(m.count_of(Normal) as u64, c["normal"].as_u64().unwrap());
        assert_eq!(m.count_of(Control) as u64, c["control"].as_u64().unwrap());
        assert_eq!(m.count_of(Unknown) as u64, c["unknown"].as_u64().unwrap());
        assert_eq!(m.count_of(Byte) as u64, c["byte"].as_u64().unwrap());
        assert_eq!(
            m.piece_to_id("\u{2581}").map(|i| i as u64),
            g["space_piece_id"].as_u64()
        );
        assert_eq!(m.normalizer_name, "nmt_nfkc");
        assert!(!m.add_dummy_prefix);
    }
}

#[test]
fn caseops_sidecar_gives_the_reference_target_bytes() {
    let g = golden("data/golden_sp1024.json");
    let seq_len = g["seq_len"].as_u64().unwrap() as usize;
    let val = shard::load_validation_tokens(
        &val_glob("sp1024"),
        seq_len,
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let side_glob = format!(
        "{}/fineweb_val_bytes_*.bin",
        fixture("data/sp1024").display()
    );
    let src =
        ByteSource::load_sidecar(&side_glob, val.len(), &pgolf::limits::Limits::default()).unwrap();
    assert_eq!(
        src.bytes_of_targets(&val, 0..val.len() - 1),
        g["sidecar_target_bytes"].as_u64().unwrap()
    );
    // The sidecar is skipped by the validation glob, which also matches it.
    let files = shard::validation_files(&val_glob("sp1024")).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| !shard::is_byte_sidecar(f)));
    let shard_tokens: Vec<u64> = g["shard_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let lens: Vec<u64> = files
        .iter()
        .map(|f| {
            shard::read_shard(f, &pgolf::limits::Limits::default())
                .unwrap()
                .len() as u64
        })
        .collect();
    assert_eq!(lens, shard_tokens, "shards concatenated in sorted order");
}

fn finding_codes(a: &audit::Audit) -> Vec<&'static str> {
    a.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.code)
        .collect()
}

#[test]
fn audit_catches_byte_fallback_pieces_costing_three_bytes() {
    // PR #1289: byte-fallback pieces charged len("\u{fffd}") = 3.
    let tok = Tokenizer::load(s(&tokenizer_path(8192))).unwrap();
    let Tokenizer::SentencePiece(m) = &tok else {
        unreachable!()
    };
    let mut table = tok.byte_table(8192);
    for (id, p) in m.pieces.iter().enumerate() {
        if p.kind == pgolf::data::sentencepiece::PieceType::Byte {
            table.base_bytes[id] = 3;
        }
    }
    let val = shard::read_shards(
        &shard::validation_files(&val_glob("sp8192")).unwrap(),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let a = audit::audit(&tok, &table, &val);
    assert!(!a.passed());
    let codes = finding_codes(&a);
    assert!(codes.contains(&"byte_fallback_cost"), "{codes:?}");
    assert!(codes.contains(&"table_mismatch"), "{codes:?}");
    assert!(!codes.contains(&"double_counted_space"), "{codes:?}");
}

#[test]
fn audit_catches_a_space_counted_twice() {
    // PR #1632: base_bytes already includes the '▁' byte and the leading-space term adds it again.
    let tok = Tokenizer::load(s(&tokenizer_path(1024))).unwrap();
    let mut table = tok.byte_table(1024);
    for id in 0..table.len() {
        if table.has_leading_space[id] {
            table.base_bytes[id] += 1;
        }
    }
    let val = shard::read_shards(
        &shard::validation_files(&val_glob("sp1024")).unwrap(),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let a = audit::audit(&tok, &table, &val);
    let codes = finding_codes(&a);
    assert!(codes.contains(&"double_counted_space"), "{codes:?}");
    assert!(
        codes.contains(&"document_bytes"),
        "the per-document check sees it too: {codes:?}"
    );
    assert!(a.documents_mismatched_without_unknown > 0);
}

#[test]
fn audit_catches_a_model_without_a_space_piece() {
    // Issue #897: no standalone '▁' piece. Rename it in a copy of the real model.
    let bytes = std::fs::read(tokenizer_path(1024)).unwrap();
    let mut proto = <ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    let id = proto
        .pieces
        .iter()
        .position(|p| p.piece.as_deref() == Some("\u{2581}"))
        .unwrap();
    proto.pieces[id].piece = Some("\u{2581}\u{2581}\u{2581}x".into());
    let broken = prost::Message::encode_to_vec(&proto);
    let m = SpModel::from_bytes(std::path::Path::new("broken.model"), &broken).unwrap();
    let tok = Tokenizer::SentencePiece(m);
    let table = tok.byte_table(1024);
    let a = audit::audit(&tok, &table, &[1, 5, 6]);
    assert_eq!(finding_codes(&a), vec!["no_space_piece"]);
}

#[test]
fn submitted_table_json_is_audited_by_the_cli() {
    let tok = Tokenizer::load(s(&tokenizer_path(1024))).unwrap();
    let mut table: ByteTable = tok.byte_table(1024);
    for id in 0..table.len() {
        if table.has_leading_space[id] {
            table.base_bytes[id] += 1;
        }
    }
    let dir = temp_dir("table");
    let path = dir.join("lut.json");
    std::fs::write(&path, serde_json::to_string(&table).unwrap()).unwrap();
    let out = pgolf(&[
        "data",
        "stats",
        "--val",
        &val_glob("sp1024"),
        "--tokenizer",
        s(&tokenizer_path(1024)),
        "--byte-table",
        s(&path),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "a failing audit exits 2");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = v["audit"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"double_counted_space"));
    let g = golden("data/golden_sp1024.json");
    assert_eq!(
        v["target_bytes"].as_u64(),
        g["all_target_bytes"].as_u64(),
        "canonical bytes still reported"
    );
    assert!(
        v["audited_table_target_bytes"].as_u64().unwrap() > v["target_bytes"].as_u64().unwrap()
    );
}

#[test]
fn data_stats_json_reports_the_golden_figures() {
    for v in variants() {
        let g = golden(&format!("data/golden_{}.json", v.name));
        let out = pgolf_json(&[
            "data",
            "stats",
            "--val",
            &val_glob(v.name),
            "--tokenizer",
            &v.tokenizer,
            "--seq-len",
            "1024",
            "--json",
        ]);
        assert_eq!(out["tokens"], g["tokens"], "{}", v.name);
        assert_eq!(out["documents"], g["documents"], "{}", v.name);
        assert_eq!(out["targets"], g["targets"], "{}", v.name);
        assert_eq!(out["target_bytes"], g["target_bytes"], "{}", v.name);
        assert_eq!(
            out["audit"]["unknown_targets"], g["unknown_targets"],
            "{}",
            v.name
        );
    }
}

// ---- malformed shards: each its own clear error naming the file ----

fn write_bytes(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    s(&p).to_string()
}

fn stats_err(val: &str) -> String {
    pgolf_err(&["data", "stats", "--val", val, "--tokenizer", "byte260"])
}

#[test]
fn malformed_shards_give_their_own_errors() {
    let dir = temp_dir("shards");
    let good = shard::encode_shard(&[1, 70, 71, 72]);

    let mut wrong_magic = good.clone();
    wrong_magic[0] ^= 0xff;
    let p = write_bytes(&dir, "magic.bin", &wrong_magic);
    let e = stats_err(&p);
    assert!(
        e.contains("magic.bin") && e.contains("wrong shard magic"),
        "{e}"
    );

    let mut wrong_version = good.clone();
    wrong_version[4] = 2;
    let p = write_bytes(&dir, "version.bin", &wrong_version);
    let e = stats_err(&p);
    assert!(
        e.contains("version.bin") && e.contains("unsupported shard version 2"),
        "{e}"
    );

    let p = write_bytes(&dir, "short.bin", &good[..100]);
    let e = stats_err(&p);
    assert!(
        e.contains("short.bin") && e.contains("shorter than the 1024-byte shard header"),
        "{e}"
    );

    let p = write_bytes(&dir, "truncated.bin", &good[..good.len() - 2]);
    let e = stats_err(&p);
    assert!(
        e.contains("truncated.bin") && e.contains("truncated"),
        "{e}"
    );

    let mut odd = good.clone();
    odd.push(0);
    let p = write_bytes(&dir, "odd.bin", &odd);
    let e = stats_err(&p);
    assert!(
        e.contains("odd.bin") && e.contains("trailing bytes") && e.contains("1033 bytes"),
        "{e}"
    );

    let mut negative = good.clone();
    negative[8..12].copy_from_slice(&(-5i32).to_le_bytes());
    let p = write_bytes(&dir, "negative.bin", &negative);
    assert!(stats_err(&p).contains("negative token count"));

    let e = stats_err(&format!("{}/nothing_*.bin", dir.display()));
    assert!(
        e.contains("no files match") && e.contains("nothing_*.bin"),
        "{e}"
    );

    let e = stats_err(&format!("{}/a[.bin", dir.display()));
    assert!(e.contains("bad glob pattern"), "{e}");
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let dir = temp_dir("oov");
    let p = write_bytes(
        &dir,
        "fineweb_val_000000.bin",
        &shard::encode_shard(&[1, 70, 300, 72]),
    );
    let e = stats_err(&p);
    assert!(
        e.contains("token id 300 at position 2") && e.contains("260 ids"),
        "{e}"
    );
}

#[test]
fn a_stream_shorter_than_one_sequence_is_rejected() {
    let dir = temp_dir("tooshort");
    let p = write_bytes(
        &dir,
        "fineweb_val_000000.bin",
        &shard::encode_shard(&[1, 70, 71]),
    );
    let e = pgolf_err(&[
        "data",
        "stats",
        "--val",
        &p,
        "--tokenizer",
        "byte260",
        "--seq-len",
        "8",
    ]);
    assert!(e.contains("too few for sequence length 8"), "{e}");
}

#[test]
fn a_file_that_is_not_a_sentencepiece_model_is_rejected() {
    let dir = temp_dir("spm");
    let p = write_bytes(&dir, "junk.model", b"\xff\xff\xff\xff not a protobuf");
    let e = pgolf_err(&[
        "data",
        "stats",
        "--val",
        &val_glob("sp1024"),
        "--tokenizer",
        &p,
    ]);
    assert!(
        e.contains("junk.model") && e.contains("not a SentencePiece model"),
        "{e}"
    );
}

#[test]
fn shard_writer_round_trips_through_a_file() {
    let dir = temp_dir("write");
    let p = dir.join("w.bin");
    let toks: Vec<u16> = (0..5000u32).map(|i| (i * 7919 % 65536) as u16).collect();
    shard::write_shard(&p, &toks).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024 + 2 * 5000);
    assert_eq!(
        shard::read_shard(&p, &pgolf::limits::Limits::default()).unwrap(),
        toks
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}
