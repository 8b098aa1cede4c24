//! Seed 002's bundled n-gram prior (architectures §2.3): the artifact's `"ngram"` entry is zlib over a pickle of
//! `{n: {prefix tuple: [(next token, count), …]}}`, written by its `build_ngram_table.py`; the evaluation keeps
//! the first (most frequent) next token of each prefix.

use std::io::Read;
use std::path::Path;

use super::pickle::{Value, unpickle};
use super::{Limits, PackError, Result};

/// One prefix of the prior and its most frequent next token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorEntry {
    pub prefix: Vec<usize>,
    pub next: usize,
    pub count: i64,
}

/// Decodes the bundled bytes (zlib, then pickle) into entries, prefixes of every order the table holds.
pub fn read_ngram_prior(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Vec<PriorEntry>> {
    let format = |message: String| PackError::Format {
        path: path.into(),
        message: format!("n-gram prior: {message}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .take(limits.max_decompressed_bytes + 1)
        .read_to_end(&mut raw)
        .map_err(|e| PackError::Corrupt {
            path: path.into(),
            layer: "n-gram prior zlib",
            message: e.to_string(),
        })?;
    if raw.len() as u64 > limits.max_decompressed_bytes {
        return Err(PackError::TooLarge {
            path: path.into(),
            layer: "n-gram prior zlib",
            limit: limits.max_decompressed_bytes,
        });
    }
    let table = unpickle(&raw, limits).map_err(|message| PackError::Pickle {
        path: path.into(),
        message: format!("n-gram prior: {message}"),
    })?;
    let Value::Dict(orders) = table else {
        return Err(format(format!(
            "expected a dict of orders, found a {}",
            table.type_name()
        )));
    };
    let id = |v: &Value, what: &str| -> Result<usize> {
        v.as_int()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format(format!("{what} is not a token id ({})", v.type_name())))
    };
    let mut entries = Vec::new();
    for (order, prefixes) in &orders {
        let n = id(order, "an order")?;
        let Value::Dict(prefixes) = prefixes else {
            return Err(format(format!("order {n} is not a dict")));
        };
        for (prefix, top) in prefixes {
            let Value::Tuple(prefix) = prefix else {
                return Err(format(format!("a prefix of order {n} is not a tuple")));
            };
            if prefix.len() + 1 != n {
                return Err(format(format!(
                    "a prefix of order {n} has {} tokens",
                    prefix.len()
                )));
            }
            let prefix = prefix
                .iter()
                .map(|t| id(t, "a prefix token"))
                .collect::<Result<Vec<_>>>()?;
            let (Value::List(top) | Value::Tuple(top)) = top else {
                return Err(format(format!("the entry of {prefix:?} is not a list")));
            };
            // The evaluation reads top_list[0][0] and skips empty lists.
            let Some(first) = top.first() else { continue };
            let (Value::Tuple(pair) | Value::List(pair)) = first else {
                return Err(format(format!("the top entry of {prefix:?} is not a pair")));
            };
            let [next, count] = &pair[..] else {
                return Err(format(format!("the top entry of {prefix:?} is not a pair")));
            };
            entries.push(PriorEntry {
                prefix,
                next: id(next, "a next token")?,
                count: count.as_int().unwrap_or(0),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_the_file_named() {
        let err = read_ngram_prior(Path::new("a.ptz"), b"not zlib", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.ptz") && err.contains("n-gram prior"),
            "{err}"
        );
    }
}
