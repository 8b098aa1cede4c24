//! The per-group `PGRP` container of rec/2026-04-27 (spec quantization-and-packing §6):
//! `b"PGRP" + u32 n + n × u32 lengths + streams`, with n = 9 streams: seven lrzip-compressed groups of int8 symbols in
//! the order of [`GROUP_ORDER`] (each tensor stored transposed, rows of `_SIMSORT` groups first reordered by a stored
//! permutation), a brotli `torch.save({"r": remainder, "m": meta, "s": shapes})`, and the brotli permutations
//! (u16 per row). The groups need the `lrzip` program; empty group streams do not.
//!
//! Version 2 (#2135's `_pack_pergroup`, [`decode_v2`]): `b"PGRP" + u32 2 + u32 n`, then per int8 matrix (sorted by
//! name) `u16 name length, name, u32 rows, u32 cols, rows × u16 row permutation`, then one byte for how the Q
//! section is compressed (1 lrzip, 0 brotli: the writer falls back to brotli without lrzip), `u32 size + the section`
//! (every matrix's rows reordered by its permutation, transposed, concatenated), and `u32 size +` a brotli
//! BSHF-shuffled `torch.save({"w": remainder, "m": meta})`. A version-1 file declares 9 streams where version 2's
//! word is 2, so the word tells them apart.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::decode_budget::DecodeBudget;
use super::torchfile::{self, HostTensor, Obj, checked_numel};
use super::{Limits, PackError, Result, outer};

pub const MAGIC: &[u8; 4] = b"PGRP";

/// Group keys in stream order; a leading `_` names a top-level tensor, the rest are per-block suffixes.
pub const GROUP_ORDER: [&str; 7] = [
    "_tok_emb.weight.q",
    "attn.c_k.weight.q",
    "attn.c_q.weight.q",
    "attn.c_v.weight.q",
    "attn.proj.weight.q",
    "mlp.fc.weight.q",
    "mlp.proj.weight.q",
];

/// Groups whose rows were reordered by L1 similarity before transposition.
const SIMSORT: [&str; 3] = ["_tok_emb.weight.q", "attn.c_q.weight.q", "mlp.fc.weight.q"];

fn format_err(path: &Path, message: String) -> PackError {
    PackError::Format {
        path: path.into(),
        message: format!("PGRP container: {message}"),
    }
}

/// Splits the container into its streams.
pub fn streams<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let u32_at = |o: usize| -> Result<usize> {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(|| format_err(path, "header truncated".into()))
    };
    let n = u32_at(4)?;
    if n > 64 {
        return Err(format_err(
            path,
            format!("{n} streams declared (at most 64 accepted)"),
        ));
    }
    let mut off = 8 + 4 * n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let len = u32_at(8 + 4 * i)?;
        let s = off
            .checked_add(len)
            .and_then(|end| bytes.get(off..end))
            .ok_or_else(|| {
                format_err(
                    path,
                    format!(
                        "stream {i} of {len} bytes runs past the end of the file ({} bytes)",
                        bytes.len()
                    ),
                )
            })?;
        out.push(s);
        off += len;
    }
    Ok(out)
}

/// A stream cut at what is left of the budget is reported against the whole budget.
fn over_budget(e: PackError, budget: &DecodeBudget) -> PackError {
    match e {
        PackError::TooLarge { layer, .. } => budget.exceeded(layer),
        other => other,
    }
}

fn brotli_capped(path: &Path, data: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 1 << 16)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| PackError::Corrupt {
            path: path.into(),
            layer: "brotli",
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(PackError::TooLarge {
            path: path.into(),
            layer: "brotli",
            limit,
        });
    }
    Ok(out)
}

/// Runs `lrzip -d` on one stream through a private temporary directory.
fn lrzip_decompress(
    path: &Path,
    group: &str,
    data: &[u8],
    limits: &Limits,
    limit: u64,
) -> Result<Vec<u8>> {
    // A private directory (created 0700 with a random name, removed when dropped): nothing planted under the system
    // temp folder can be written through.
    let mut builder = tempfile::Builder::new();
    builder.prefix("pgolf-lrzip-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    let scratch = builder.tempdir().map_err(|source| PackError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let dir = scratch.path().to_path_buf();
    let io_err = |source: std::io::Error| PackError::Io {
        path: dir.clone(),
        source,
    };
    let (inp, out) = (dir.join("group.lrz"), dir.join("group.bin"));
    let result = (|| {
        std::fs::write(&inp, data).map_err(io_err)?;
        let child = Command::new("lrzip")
            .arg("-d")
            .arg("-f")
            .arg("-q")
            .arg("-o")
            .arg(&out)
            .arg(&inp)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PackError::Unsupported {
                    path: path.into(),
                    what: format!(
                        "a PGRP container whose group {group:?} is lrzip-compressed: the `lrzip` program is not on \
                         PATH (install it, e.g. `apt-get install lrzip`)"
                    ),
                });
            }
            Err(e) => return Err(io_err(e)),
        };
        // Untrusted input must not hang pgolf: the program is killed past the time limit.
        let deadline = Instant::now() + Duration::from_secs(limits.max_external_seconds);
        loop {
            if child.try_wait().map_err(io_err)?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PackError::Corrupt {
                    path: path.into(),
                    layer: "lrzip",
                    message: format!(
                        "group {group:?}: lrzip ran past the limit of {} s and was stopped",
                        limits.max_external_seconds
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let run = child.wait_with_output().map_err(io_err)?;
        if !run.status.success() {
            return Err(PackError::Corrupt {
                path: path.into(),
                layer: "lrzip",
                message: format!(
                    "group {group:?}: {}",
                    String::from_utf8_lossy(&run.stderr).trim()
                ),
            });
        }
        let len = std::fs::metadata(&out).map_err(io_err)?.len();
        if len > limit {
            return Err(PackError::TooLarge {
                path: path.into(),
                layer: "lrzip",
                limit,
            });
        }
        std::fs::read(&out).map_err(io_err)
    })();
    drop(scratch);
    result
}

fn shapes_of(path: &Path, manifest: &Obj, group: &str) -> Result<Vec<Vec<usize>>> {
    let Some(Obj::List(items)) = manifest.get(group) else {
        return Err(format_err(
            path,
            format!("no shape list for group {group:?}"),
        ));
    };
    items
        .iter()
        .map(|s| match s {
            Obj::List(dims) => dims
                .iter()
                .map(|d| match d {
                    Obj::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(format_err(
                        path,
                        format!("group {group:?} has a non-integer dimension"),
                    )),
                })
                .collect::<Result<Vec<usize>>>()
                .and_then(|shape| match checked_numel(&shape) {
                    Some(_) => Ok(shape),
                    None => Err(format_err(
                        path,
                        format!("group {group:?}: shape {shape:?} overflows"),
                    )),
                }),
            _ => Err(format_err(
                path,
                format!("group {group:?} has a shape that is not a tuple"),
            )),
        })
        .collect()
}

/// The version word of a PGRP file: 2 for #2135's frame; anything else is read as version 1's stream count.
pub fn version(bytes: &[u8]) -> u32 {
    match bytes.get(4..8) {
        Some(b) if u32::from_le_bytes(b.try_into().unwrap()) == 2 => 2,
        _ => 1,
    }
}

/// How a version-2 Q section is compressed.
pub fn v2_q_method(bytes: &[u8]) -> Option<&'static str> {
    let mut r = Reader { bytes, at: 12 };
    let n = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    for _ in 0..n {
        let len = r.u16().ok()? as usize;
        r.take(len).ok()?;
        let rows = r.u32().ok()? as usize;
        r.u32().ok()?;
        r.take(rows.checked_mul(2)?).ok()?;
    }
    match r.u8().ok()? {
        1 => Some("lrzip"),
        0 => Some("brotli"),
        _ => None,
    }
}

/// A cursor over a version-2 frame; every read past the end is an error naming what was being read.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{n} bytes at offset {} run past the end of the file ({} bytes)",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

/// At most this many matrices in a version-2 frame (#2135 has 67).
const V2_MAX_MATRICES: u32 = 4096;

/// Decodes #2135's PGRP version-2 frame into the `{"w": …, "m": …}` object its `_unpack_pergroup` returns. Every
/// section decoded is charged to `budget`; the permutations are checked to be permutations, the Q section to hold
/// exactly the matrices declared, and nothing may follow the remainder.
pub fn decode_v2(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<Obj> {
    let err = |m: String| format_err(path, format!("version 2: {m}"));
    let mut r = Reader { bytes, at: 8 };
    let n = r.u32().map_err(err)?;
    if n > V2_MAX_MATRICES {
        return Err(err(format!(
            "{n} matrices declared (at most {V2_MAX_MATRICES} accepted)"
        )));
    }
    struct Declared {
        name: String,
        rows: usize,
        cols: usize,
        perm: Vec<usize>,
    }
    let mut declared = Vec::with_capacity(n as usize);
    let mut total = 0usize;
    for i in 0..n {
        let len = r.u16().map_err(err)? as usize;
        let name = std::str::from_utf8(r.take(len).map_err(err)?)
            .map_err(|_| err(format!("matrix {i}'s name is not UTF-8")))?
            .to_string();
        let rows = r.u32().map_err(err)? as usize;
        let cols = r.u32().map_err(err)? as usize;
        let numel = checked_numel(&[rows, cols])
            .filter(|&e| e as u64 <= limits.max_tensor_elements)
            .ok_or_else(|| {
                err(format!(
                    "{name}: {rows} × {cols} is larger than the tensor limit"
                ))
            })?;
        total = total
            .checked_add(numel)
            .ok_or_else(|| err("the matrices' sizes overflow".into()))?;
        let raw = r.take(rows * 2).map_err(err)?;
        let mut seen = vec![false; rows];
        let mut perm = Vec::with_capacity(rows);
        for p in raw.chunks_exact(2) {
            let v = u16::from_le_bytes([p[0], p[1]]) as usize;
            if v >= rows || seen[v] {
                return Err(err(format!(
                    "{name}: the row permutation is not a permutation"
                )));
            }
            seen[v] = true;
            perm.push(v);
        }
        if declared.iter().any(|d: &Declared| d.name == name) {
            return Err(err(format!("{name} is declared twice")));
        }
        declared.push(Declared {
            name,
            rows,
            cols,
            perm,
        });
    }
    let method = r.u8().map_err(err)?;
    let q_len = r.u32().map_err(err)? as usize;
    let q_section = r.take(q_len).map_err(err)?;
    let rem_len = r.u32().map_err(err)? as usize;
    let rem_section = r.take(rem_len).map_err(err)?;
    if r.at != bytes.len() {
        return Err(err(format!(
            "{} bytes follow the remainder",
            bytes.len() - r.at
        )));
    }
    let raw = match method {
        1 => lrzip_decompress(path, "Q section", q_section, limits, budget.remaining())
            .map_err(|e| over_budget(e, budget))?,
        0 => brotli_capped(path, q_section, budget.remaining())
            .map_err(|e| over_budget(e, budget))?,
        other => {
            return Err(err(format!(
                "Q section compressed by method {other} (1 lrzip, 0 brotli are known)"
            )));
        }
    };
    budget.charge(
        if method == 1 { "lrzip" } else { "brotli" },
        raw.len() as u64,
    )?;
    if raw.len() != total {
        return Err(err(format!(
            "the Q section holds {} bytes, the {} matrices declared take {total}",
            raw.len(),
            declared.len()
        )));
    }
    let remainder_zip =
        brotli_capped(path, rem_section, budget.remaining()).map_err(|e| over_budget(e, budget))?;
    budget.charge("brotli", remainder_zip.len() as u64)?;
    let (_, remainder_zip) = outer::peel(path, remainder_zip, budget, torchfile::is_zip)?;
    let remainder = torchfile::load_torch(path, &remainder_zip, limits, budget)?;
    let (Some(Obj::Dict(rest)), Some(meta)) = (remainder.get("w"), remainder.get("m")) else {
        return Err(err("the remainder is not {\"w\", \"m\"}".into()));
    };
    let mut w = rest.clone();
    let mut off = 0usize;
    for d in &declared {
        let n = d.rows * d.cols;
        let chunk = &raw[off..off + n];
        off += n;
        // Stored as the row-sorted matrix transposed: chunk[c·rows + j] = W[perm[j]][c].
        let mut data = vec![0u8; n];
        for (j, &dst) in d.perm.iter().enumerate() {
            for c in 0..d.cols {
                data[dst * d.cols + c] = chunk[c * d.rows + j];
            }
        }
        if w.iter()
            .any(|(k, _)| matches!(k, Obj::Str(s) if *s == d.name))
        {
            return Err(err(format!(
                "{} is both a Q matrix and in the remainder",
                d.name
            )));
        }
        w.push((
            Obj::Str(d.name.clone()),
            Obj::Tensor(HostTensor {
                dtype: "int8".into(),
                shape: vec![d.rows, d.cols],
                data,
            }),
        ));
    }
    Ok(Obj::Dict(vec![
        (Obj::Str("w".into()), Obj::Dict(w)),
        (Obj::Str("m".into()), meta.clone()),
    ]))
}

/// Decodes a PGRP container into the `{"w": …, "m": …}` object its records load.
/// Every stream decoded is charged to `budget`.
pub fn decode(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<Obj> {
    if version(bytes) == 2 {
        return decode_v2(path, bytes, limits, budget);
    }
    let streams = streams(path, bytes)?;
    if streams.len() != GROUP_ORDER.len() + 2 {
        return Err(format_err(
            path,
            format!(
                "{} streams, expected {}",
                streams.len(),
                GROUP_ORDER.len() + 2
            ),
        ));
    }
    let remainder_zip = brotli_capped(path, streams[GROUP_ORDER.len()], budget.remaining())
        .map_err(|e| over_budget(e, budget))?;
    budget.charge("brotli", remainder_zip.len() as u64)?;
    let (_, remainder_zip) = outer::peel(path, remainder_zip, budget, torchfile::is_zip)?;
    let remainder = torchfile::load_torch(path, &remainder_zip, limits, budget)?;
    let (Some(Obj::Dict(r)), Some(meta), Some(manifest)) =
        (remainder.get("r"), remainder.get("m"), remainder.get("s"))
    else {
        return Err(format_err(
            path,
            "the remainder is not {\"r\", \"m\", \"s\"}".into(),
        ));
    };
    let perm_stream = streams[GROUP_ORDER.len() + 1];
    let perms = if perm_stream.is_empty() {
        Vec::new()
    } else {
        let perms = brotli_capped(path, perm_stream, budget.remaining())
            .map_err(|e| over_budget(e, budget))?;
        budget.charge("brotli", perms.len() as u64)?;
        perms
    };
    let mut perm_off = 0usize;
    let mut w = r.clone();
    for (gi, group) in GROUP_ORDER.iter().enumerate() {
        if streams[gi].is_empty() {
            continue;
        }
        let raw = lrzip_decompress(path, group, streams[gi], limits, budget.remaining())
            .map_err(|e| over_budget(e, budget))?;
        budget.charge("lrzip", raw.len() as u64)?;
        let shapes = shapes_of(path, manifest, group)?;
        let mut off = 0usize;
        for (layer, shape) in shapes.iter().enumerate() {
            let name = match group.strip_prefix('_') {
                Some(top) => top.to_string(),
                None => format!("blocks.{layer}.{group}"),
            };
            let n = checked_numel(shape).ok_or_else(|| {
                format_err(path, format!("group {group:?}: shape {shape:?} overflows"))
            })?;
            let chunk = off
                .checked_add(n)
                .and_then(|end| raw.get(off..end))
                .ok_or_else(|| {
                    format_err(
                        path,
                        format!(
                            "group {group:?} holds {} bytes, too few for {name} {shape:?}",
                            raw.len()
                        ),
                    )
                })?;
            off += n;
            let data = if let [rows, cols] = shape[..] {
                // Stored transposed: chunk[c·rows + r] = sorted[r][c].
                let mut sorted = vec![0u8; n];
                for c in 0..cols {
                    for rr in 0..rows {
                        sorted[rr * cols + c] = chunk[c * rows + rr];
                    }
                }
                if SIMSORT.contains(group) {
                    let perm = perms.get(perm_off..perm_off + 2 * rows).ok_or_else(|| {
                        format_err(
                            path,
                            format!("permutations end before {name}'s {rows} rows"),
                        )
                    })?;
                    perm_off += 2 * rows;
                    let mut restored = vec![0u8; n];
                    let mut seen = vec![false; rows];
                    for (j, p) in perm.chunks_exact(2).enumerate() {
                        let dst = u16::from_le_bytes([p[0], p[1]]) as usize;
                        if dst >= rows || seen[dst] {
                            return Err(format_err(
                                path,
                                format!("{name}: the row permutation is not a permutation"),
                            ));
                        }
                        seen[dst] = true;
                        restored[dst * cols..(dst + 1) * cols]
                            .copy_from_slice(&sorted[j * cols..(j + 1) * cols]);
                    }
                    restored
                } else {
                    sorted
                }
            } else {
                chunk.to_vec()
            };
            w.push((
                Obj::Str(name),
                Obj::Tensor(HostTensor {
                    dtype: "int8".into(),
                    shape: shape.clone(),
                    data,
                }),
            ));
        }
    }
    Ok(Obj::Dict(vec![
        (Obj::Str("w".into()), Obj::Dict(w)),
        (Obj::Str("m".into()), meta.clone()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_whose_element_count_overflows_is_an_error() {
        let dims = |d: &[i64]| Obj::List(d.iter().map(|&x| Obj::Int(x)).collect());
        let manifest = Obj::Dict(vec![(
            Obj::Str("mlp.fc.weight.q".into()),
            Obj::List(vec![dims(&[8, 4]), dims(&[1 << 32, 1 << 32])]),
        )]);
        let e = shapes_of(Path::new("g.ptz"), &manifest, "mlp.fc.weight.q")
            .unwrap_err()
            .to_string();
        assert!(e.contains("g.ptz") && e.contains("overflows"), "{e}");
        let fine = Obj::Dict(vec![(
            Obj::Str("mlp.fc.weight.q".into()),
            Obj::List(vec![dims(&[8, 4])]),
        )]);
        assert_eq!(
            shapes_of(Path::new("g.ptz"), &fine, "mlp.fc.weight.q").unwrap(),
            vec![vec![8, 4]]
        );
    }
}
