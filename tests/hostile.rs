//! Hostile input, round 2: crafted files that once panicked, were accepted when they are malformed, named the wrong
//! file, or made pgolf overwrite what it read. Each case here failed on the code before the fix it names.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::*;
use pgolf::pack::Limits;
use pgolf::pack::artifact::load_artifact;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A pgolf artifact with its header JSON edited by `edit` (recompressed, sha256 recomputed).
fn edited_container(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let header_len = u32::from_le_bytes(bytes[7..11].try_into().unwrap()) as usize;
    let rest = &bytes[43..];
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&rest[..header_len])
        .read_to_end(&mut json)
        .unwrap();
    let mut header: Value = serde_json::from_slice(&json).unwrap();
    edit(&mut header);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    z.write_all(&serde_json::to_vec(&header).unwrap()).unwrap();
    let header_z = z.finish().unwrap();
    let mut new_rest = header_z.clone();
    new_rest.extend_from_slice(&rest[header_len..]);
    let mut out = bytes[..7].to_vec();
    out.extend_from_slice(&(header_z.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&new_rest));
    out.extend_from_slice(&new_rest);
    out
}

fn packed_fixture() -> Vec<u8> {
    std::fs::read(fixture("pack/sp1024_tied.sdclip.pglf")).unwrap()
}

fn load_err(path: &Path) -> String {
    load_artifact(path, &Limits::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_zero_element_tensor_starting_past_its_storage_is_an_error_not_a_panic() {
    let dir = temp_dir("hostile-offset");
    let p = write(
        &dir,
        "empty.pt",
        &torch_zip(
            &tensor_pickle(6, 1_000_000, &[0], &[1]),
            &[("0", vec![1, 2, 3, 4, 5, 6])],
        ),
    );
    let e = load_err(&p);
    assert!(
        e.contains("empty.pt") && e.contains("starts at element 1000000"),
        "{e}"
    );
    // At the end of its storage, an empty tensor is fine.
    let p = write(
        &dir,
        "end.pt",
        &torch_zip(
            &tensor_pickle(6, 6, &[0], &[1]),
            &[("0", vec![1, 2, 3, 4, 5, 6])],
        ),
    );
    assert_eq!(
        load_artifact(&p, &Limits::default()).unwrap().tensors[0].params(),
        0
    );
}

#[test]
fn container_spans_that_overlap_or_alias_are_refused() {
    let dir = temp_dir("hostile-spans");
    let good = packed_fixture();
    let spans_of = |h: &Value| -> Vec<(usize, String)> {
        h["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, t)| t["symbols"].is_object())
            .map(|(i, t)| (i, t["name"].as_str().unwrap().to_string()))
            .collect()
    };
    // Two tensors of one shape made to read the same symbols.
    let aliased = edited_container(&good, |h| {
        let quantized = spans_of(h);
        let (a, b) = quantized
            .iter()
            .flat_map(|x| quantized.iter().map(move |y| (x, y)))
            .find(|(x, y)| x.0 < y.0 && h["tensors"][x.0]["shape"] == h["tensors"][y.0]["shape"])
            .map(|(x, y)| (x.0, y.0))
            .expect("two quantized tensors of one shape");
        let span = h["tensors"][a]["symbols"].clone();
        h["tensors"][b]["symbols"] = span;
    });
    let e = load_err(&write(&dir, "aliased.pglf", &aliased));
    assert!(e.contains("aliased.pglf") && e.contains("overlap"), "{e}");
    // A span that starts inside another.
    let overlapping = edited_container(&good, |h| {
        let (i, _) = spans_of(h)[1].clone();
        let off = h["tensors"][i]["symbols"]["offset"].as_u64().unwrap();
        h["tensors"][i]["symbols"]["offset"] = (off - 1).into();
    });
    let e = load_err(&write(&dir, "overlap.pglf", &overlapping));
    assert!(e.contains("overlap"), "{e}");
    // The fixture itself, rewritten unchanged, still reads.
    let same = edited_container(&good, |_| {});
    assert!(load_artifact(&write(&dir, "same.pglf", &same), &Limits::default()).is_ok());
}

#[test]
fn a_container_header_is_capped_in_size_and_tensor_count() {
    let dir = temp_dir("hostile-header");
    let good = packed_fixture();
    // 20 MB of JSON (a few KB compressed) in the carried config.
    let huge = edited_container(&good, |h| {
        h["config"]["padding"] = " ".repeat(20 << 20).into();
    });
    let p = write(&dir, "huge-header.pglf", &huge);
    assert!(std::fs::metadata(&p).unwrap().len() < 200_000);
    let e = load_err(&p);
    assert!(
        e.contains("huge-header.pglf") && e.contains("more than any real header"),
        "{e}"
    );
    // 100,001 tensors of no elements.
    let many = edited_container(&good, |h| {
        let empty: Value = serde_json::json!({
            "name": "t", "shape": [0], "scheme": "passthrough_fp32", "bits": 32, "orig_dtype": "float32",
            "values": {"dtype": "float32", "shape": [0], "offset": 0, "length": 0}
        });
        h["tensors"] = Value::Array(vec![empty; 100_001]);
    });
    let e = load_err(&write(&dir, "many.pglf", &many));
    assert!(e.contains("100001 tensors"), "{e}");
}

#[test]
fn files_too_large_to_be_what_they_claim_are_refused_from_their_size() {
    let dir = temp_dir("hostile-size");
    // Sparse 4 GiB files: refused before any of it is read.
    let sparse = |name: &str, head: &[u8]| {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(head).unwrap();
        f.set_len(4 << 30).unwrap();
        p
    };
    let artifact = sparse("big.ptz", b"\x78\x9c");
    let e = pgolf_err(&["inspect", s(&artifact)]);
    assert!(
        e.contains("big.ptz")
            && e.contains("more than the limit of 1073741824 bytes")
            && e.contains("--max-decompressed-bytes"),
        "{e}"
    );
    let tokenizer = sparse("big.model", b"\x0a");
    let val = model_val_glob(1024);
    let e = pgolf_err(&["data", "stats", "--val", &val, "--tokenizer", s(&tokenizer)]);
    assert!(
        e.contains("big.model") && e.contains("more than the limit of 67108864 bytes"),
        "{e}"
    );
    let shard = sparse("fineweb_val_000000.bin", &[0u8; 1024]);
    let e = pgolf_err(&[
        "data",
        "stats",
        "--val",
        s(&shard),
        "--tokenizer",
        s(&tokenizer_path(1024)),
    ]);
    assert!(e.contains("wrong shard magic"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_token_is_reported_against_the_shard_that_holds_it() {
    let dir = temp_dir("hostile-second-shard");
    let good = pgolf::data::shard::encode_shard(&[1, 5, 6, 7]);
    let bad = pgolf::data::shard::encode_shard(&[1, 5, 5000, 7]);
    write(&dir, "fineweb_val_000000.bin", &good);
    write(&dir, "fineweb_val_000001.bin", &bad);
    let e = pgolf_err(&[
        "data",
        "stats",
        "--val",
        &format!("{}/fineweb_val_*.bin", dir.display()),
        "--tokenizer",
        s(&tokenizer_path(1024)),
    ]);
    assert!(
        e.contains("fineweb_val_000001.bin") && !e.contains("fineweb_val_000000.bin"),
        "{e}"
    );
}

fn pack_args<'a>(checkpoint: &'a str, config: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["pack", checkpoint, "--config", config, "-o", out]
}

#[test]
fn pack_never_overwrites_its_input() {
    let dir = temp_dir("hostile-pack-input");
    let original = std::fs::read(fixture("models/sp1024_tied.safetensors")).unwrap();
    let checkpoint = write(&dir, "model.safetensors", &original);
    let link = dir.join("link.pglf");
    std::fs::hard_link(&checkpoint, &link).unwrap();
    let cfg = fixture("models/sp1024_tied.json");
    for out in [&checkpoint, &link] {
        let e = pgolf_err(&pack_args(s(&checkpoint), s(&cfg), s(out)));
        assert!(e.contains("is the input"), "{e}");
    }
    assert_eq!(std::fs::read(&checkpoint).unwrap(), original);
}

#[test]
fn outputs_leave_the_users_files_and_no_temporaries_behind() {
    let dir = temp_dir("hostile-temporaries");
    let out = dir.join("out.pglf");
    // A temporary file a killed pack left behind, and a user's own file named like the old fixed temp name.
    let stale = write(&dir, ".out.pglf.pgolf-tmp-4000000000-x1", b"stale");
    let users = write(&dir, "receipts.tmp", b"mine");
    let cfg = fixture("models/sp1024_tied.json");
    let checkpoint = fixture("models/sp1024_tied.safetensors");
    let o = pgolf(&pack_args(s(&checkpoint), s(&cfg), s(&out)));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "the stale temporary is removed");
    let receipts = dir.join("receipts.json");
    let o = pgolf(&[
        "verify",
        s(&out),
        "--val",
        &model_val_glob(1024),
        "--tokenizer",
        s(&tokenizer_path(1024)),
        "--receipts",
        s(&receipts),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&users).unwrap(), b"mine");
    let receipts: Value = serde_json::from_slice(&std::fs::read(&receipts).unwrap()).unwrap();
    assert!(!receipts.as_array().unwrap().is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out.pglf", "receipts.json", "receipts.tmp"]);
}

#[test]
fn two_packs_to_one_output_leave_one_whole_artifact() {
    let dir = temp_dir("hostile-race");
    let out = dir.join("out.pglf");
    let cfg = fixture("models/sp1024_tied.json");
    let checkpoint = fixture("models/sp1024_tied.safetensors");
    let spawn = |codec: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgolf"))
            .args([
                "pack",
                s(&checkpoint),
                "--config",
                s(&cfg),
                "-o",
                s(&out),
                "--codec",
                codec,
            ])
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| spawn("rans"));
        let b = sc.spawn(|| spawn("zstd"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    let artifact = load_artifact(&out, &Limits::default()).unwrap();
    let expected =
        load_artifact(&fixture("pack/sp1024_tied.sdclip.pglf"), &Limits::default()).unwrap();
    assert_eq!(
        artifact.tensors.len(),
        expected.tensors.len(),
        "one whole artifact"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out.pglf"]);
}

#[test]
fn memo_copies_of_a_large_value_are_charged_before_they_are_made() {
    // One 8 MiB byte string, memoized, then copied 199 times through the memo into a list.
    let mut p = vec![0x80, 3, b']', b'(', b'B'];
    p.extend_from_slice(&(8u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(0u8, 8 << 20));
    p.extend_from_slice(&[b'q', 1]);
    for _ in 0..199 {
        p.extend_from_slice(&[b'h', 1]);
    }
    p.extend_from_slice(b"e.");
    let limits = Limits {
        max_decompressed_bytes: 64 << 20,
        ..Limits::default()
    };
    let e = pgolf::pack::pickle::unpickle(&p, &limits).unwrap_err();
    assert!(
        e.contains("past the limit of 67108864 bytes") && e.contains("memo copies"),
        "{e}"
    );
    // Under a budget that holds them, the same copies are made.
    let roomy = Limits {
        max_decompressed_bytes: 2 << 30,
        ..Limits::default()
    };
    let p_small: Vec<u8> = {
        let mut q = vec![0x80, 3, b']', b'(', b'B'];
        q.extend_from_slice(&4u32.to_le_bytes());
        q.extend_from_slice(b"abcd");
        q.extend_from_slice(&[b'q', 1, b'h', 1, b'h', 1]);
        q.extend_from_slice(b"e.");
        q
    };
    let v = pgolf::pack::pickle::unpickle(&p_small, &roomy).unwrap();
    assert_eq!(
        v,
        pgolf::pack::pickle::Value::List(vec![
            pgolf::pack::pickle::Value::Bytes(b"abcd".to_vec());
            3
        ])
    );
}

#[test]
fn setitems_finds_existing_keys_by_hash_and_keeps_python_semantics() {
    use pgolf::pack::pickle::{Value, unpickle};
    // {} ( "k0" 0 "k1" 1 … "k{n-1}" n−1 "k0" 42 ) SETITEMS: 400,000 distinct keys, then an override of the first.
    let n = 400_000u32;
    let mut p = vec![0x80, 2, b'}', b'('];
    let key = |p: &mut Vec<u8>, i: u32| {
        let k = format!("k{i}");
        p.push(b'X');
        p.extend_from_slice(&(k.len() as u32).to_le_bytes());
        p.extend_from_slice(k.as_bytes());
    };
    for i in 0..n {
        key(&mut p, i);
        p.push(b'J');
        p.extend_from_slice(&(i as i32).to_le_bytes());
    }
    key(&mut p, 0);
    p.extend_from_slice(&[b'K', 42]);
    p.extend_from_slice(b"u.");
    let v = unpickle(&p, &Limits::default()).unwrap();
    let Value::Dict(items) = &v else {
        panic!("a dict")
    };
    assert_eq!(
        items.len(),
        n as usize,
        "the repeated key overrides, in place"
    );
    assert_eq!(items[0], (Value::Str("k0".into()), Value::Int(42)));
    assert_eq!(
        items[n as usize - 1],
        (Value::Str(format!("k{}", n - 1)), Value::Int(n as i64 - 1))
    );
}

/// A pgolf container (codec 0, rANS) from a header and a body.
fn container(header: &Value, body: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    z.write_all(&serde_json::to_vec(header).unwrap()).unwrap();
    let header_z = z.finish().unwrap();
    let mut rest = header_z.clone();
    rest.extend_from_slice(body);
    let mut out = b"PGLF\x01\x00\x01".to_vec();
    out.extend_from_slice(&(header_z.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&rest));
    out.extend_from_slice(&rest);
    out
}

#[test]
fn a_few_bytes_of_rans_cannot_stand_for_a_billion_symbols() {
    let dir = temp_dir("hostile-rans-bomb");
    // 2^29 symbols of a one-symbol alphabet at frequency 2^16: the state never moves, so no word is ever read.
    let n: u64 = 1 << 29;
    let mut stream = vec![
        1u8, 0x80, 0x80, 0x80, 0x80, 0x02, 0, 0, 16, 0x80, 0x80, 0x04, 1, 2,
    ];
    stream.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    let mut body = stream.clone();
    body.extend_from_slice(&1f32.to_le_bytes());
    let header = serde_json::json!({
        "format": "pgolf-v1", "config": null,
        "tensors": [{
            "name": "w", "shape": [n], "scheme": "int8_per_tensor", "bits": 8, "orig_dtype": "float32",
            "symbols": {"dtype": "int8", "shape": [n], "offset": 0, "length": stream.len()},
            "scales": {"dtype": "float32", "shape": [], "offset": stream.len(), "length": 4}
        }]
    });
    let p = write(&dir, "bomb.pglf", &container(&header, &body));
    assert!(std::fs::metadata(&p).unwrap().len() < 1000);
    // Refused by the expansion cap (a 236-byte file gets the 64 MiB floor), and by the 1 GiB budget without it.
    let e = load_err(&p);
    assert!(
        e.contains("bomb.pglf") && e.contains("128× the file's") && e.contains("--max-expansion"),
        "{e}"
    );
    let no_ratio = Limits {
        max_expansion: u64::MAX,
        ..Limits::default()
    };
    let e = load_artifact(&p, &no_ratio).unwrap_err().to_string();
    assert!(e.contains("past the limit of 1073741824 bytes"), "{e}");
    // The same stream for 1,000 symbols decodes.
    let mut small = vec![1u8, 0xe8, 0x07, 0, 0, 16, 0x80, 0x80, 0x04, 1, 2];
    small.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    let mut body = small.clone();
    body.extend_from_slice(&1f32.to_le_bytes());
    let header = serde_json::json!({
        "format": "pgolf-v1", "config": null,
        "tensors": [{
            "name": "w", "shape": [1000], "scheme": "int8_per_tensor", "bits": 8, "orig_dtype": "float32",
            "symbols": {"dtype": "int8", "shape": [1000], "offset": 0, "length": small.len()},
            "scales": {"dtype": "float32", "shape": [], "offset": small.len(), "length": 4}
        }]
    });
    let p = write(&dir, "small.pglf", &container(&header, &body));
    let a = load_artifact(&p, &Limits::default()).unwrap();
    assert_eq!(a.tensors[0].params(), 1000);
}

#[test]
fn a_stride_zero_view_is_charged_for_every_element_it_makes() {
    let dir = temp_dir("hostile-stride0");
    // Six bytes of storage viewed as 255³ elements.
    let p = write(
        &dir,
        "view.pt",
        &torch_zip(
            &tensor_pickle(6, 0, &[255, 255, 255], &[0, 0, 0]),
            &[("0", vec![1, 2, 3, 4, 5, 6])],
        ),
    );
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = load_artifact(&p, &limits).unwrap_err().to_string();
    assert!(
        e.contains("view.pt") && e.contains("past the limit of 1048576 bytes"),
        "{e}"
    );
    // Under the default expansion cap too (a 64 MiB floor for a file this small); with room, it is materialized.
    let e = load_artifact(&p, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-expansion"), "{e}");
    let roomy = Limits {
        max_expansion: u64::MAX,
        ..Limits::default()
    };
    let a = load_artifact(&p, &roomy).unwrap();
    assert_eq!(a.tensors[0].params(), 255 * 255 * 255);
}

#[test]
fn millions_of_empty_tensors_are_refused_by_count() {
    let dir = temp_dir("hostile-empty-tensors");
    // A list of 100,001 views of no elements, the rebuild function and the storage shared through the memo.
    let mut p = vec![0x80, 2, b']', b'('];
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x01(");
    p.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nCharStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQq\x02",
    );
    p.extend_from_slice(b"K\x00(K\x00t(K\x01t\x89N)tR");
    for _ in 0..100_000 {
        p.extend_from_slice(b"h\x01(h\x02K\x00(K\x00t(K\x01t\x89N)tR");
    }
    p.extend_from_slice(b"e.");
    let path = write(
        &dir,
        "empties.pt",
        &torch_zip(&p, &[("0", vec![1, 2, 3, 4, 5, 6])]),
    );
    let e = load_err(&path);
    assert!(
        e.contains("empties.pt") && e.contains("more than the 100000 tensors"),
        "{e}"
    );
}

#[test]
fn nested_layers_spend_one_budget() {
    let dir = temp_dir("hostile-nested");
    // zlib over a BSHF layer over a torch zip of ~600 KB: each layer alone fits in 1 MiB, together they do not.
    let storage: Vec<u8> = (0..600_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let first: Vec<f32> = storage[..6].iter().map(|&b| b as i8 as f32).collect();
    let zip = torch_zip(&tensor_pickle(6, 0, &[2, 3], &[3, 1]), &[("0", storage)]);
    let mut bshf = b"BSHF\x02".to_vec();
    bshf.extend(pgolf::pack::outer::shuffle(&zip, 2));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    z.write_all(&bshf).unwrap();
    let p = write(&dir, "nested.ptz", &z.finish().unwrap());
    let small = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = load_artifact(&p, &small).unwrap_err().to_string();
    assert!(
        e.contains("nested.ptz") && e.contains("past the limit of 1048576 bytes"),
        "{e}"
    );
    let roomy = Limits {
        max_decompressed_bytes: 4 << 20,
        ..Limits::default()
    };
    let a = load_artifact(&p, &roomy).unwrap();
    assert_eq!(a.layers.len(), 2);
    assert_eq!(a.tensors[0].dequantize(), first);
}

/// lrzip's scratch folder is private: created with mode 0700 under a random name, so nothing planted under the
/// system temp folder (a symlink at a guessable name) is written through. A stand-in `lrzip` reports the folder
/// it was handed.
#[cfg(unix)]
#[test]
fn the_lrzip_scratch_folder_is_private_and_unguessable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("hostile-lrzip-scratch");
    let report = dir.join("scratch.txt");
    let fake = dir.join("lrzip");
    // lrzip -d -f -q -o OUT IN: report IN's folder and its mode, then fail.
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a; do last=\"$a\"; done\nd=$(dirname \"$last\")\nstat -c '%a %n' \"$d\" > {}\nexit 1\n",
            report.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgolf"))
        .args([
            "inspect",
            s(&fixture("artifacts/sp1024_tied.int6.pgrp.ptz")),
        ])
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let seen = std::fs::read_to_string(&report).unwrap();
    let (mode, folder) = seen.trim().split_once(' ').unwrap();
    assert_eq!(mode, "700", "{seen}");
    let name = Path::new(folder)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        folder.starts_with(s(&tmp)) && name.starts_with("pgolf-lrzip-"),
        "{seen}"
    );
    let suffix = &name["pgolf-lrzip-".len()..];
    // tempfile's random characters, not the guessable `{pid}-{group}` the folder was once named.
    assert!(
        suffix.len() >= 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
        "{name}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the scratch folder is removed"
    );
}
