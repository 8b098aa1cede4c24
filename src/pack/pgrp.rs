//! The per-group `PGRP` container of rec/2026-04-27 (spec quantization-and-packing §6):
//! `b"PGRP" + u32 n + n × u32 lengths + streams`, with n = 9 streams: seven lrzip-compressed groups of int8 symbols in
//! the order of [`GROUP_ORDER`] (each tensor stored transposed, rows of `_SIMSORT` groups first reordered by a stored
//! permutation), a brotli `torch.save({"r": remainder, "m": meta, "s": shapes})`, and the brotli permutations
//! (u16 per row). The groups need the `lrzip` program; empty group streams do not.

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

/// Decodes a PGRP container into the `{"w": …, "m": …}` object its records load.
/// Every stream decoded is charged to `budget`.
pub fn decode(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<Obj> {
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
