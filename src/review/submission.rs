//! `submission.json` in every key variant the records use (the schema is free-form): the claimed score, its spread,
//! the byte counts, and the per-seed results (`seed_results`, or `seeds` as a map, or `seeds` as a list of seed
//! numbers). Keys it does not interpret are kept and shown.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// One seed's claimed result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeedClaim {
    pub seed: String,
    pub val_bpb: Option<f64>,
    pub val_loss: Option<f64>,
    pub artifact_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub train_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
}

/// What a submission claims.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Claims {
    /// The file it came from (`submission.json`, or a variant name such as `submission_ternary.json`).
    pub file: Option<String>,
    pub name: Option<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub track: Option<String>,
    /// The claimed (mean) score.
    pub val_bpb: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_bpb_std: Option<f64>,
    pub val_loss_std: Option<f64>,
    pub bytes_total: Option<u64>,
    pub bytes_code: Option<u64>,
    pub seeds: Vec<SeedClaim>,
    /// The claim's own statistics, where it states them.
    pub p_value: Option<f64>,
    pub t_statistic: Option<f64>,
    /// Keys this reader does not interpret, with their values.
    pub other_keys: BTreeMap<String, Value>,
}

/// Keys read into [`Claims`] (everything else lands in `other_keys`).
const KNOWN: &[&str] = &[
    "name",
    "author",
    "date",
    "track",
    "val_bpb",
    "mean_val_bpb",
    "mean_bpb",
    "val_loss",
    "mean_val_loss",
    "val_loss_nats",
    "mean_val_loss_nats",
    "val_bpb_std",
    "std_bpb",
    "val_loss_std",
    "val_loss_nats_std",
    "std_val_loss_nats",
    "bytes_total",
    "artifact_bytes_max",
    "bytes_code",
    "code_bytes",
    "seeds",
    "seed_results",
    "seed_scores",
    "val_bpb_seeds",
    "artifact_bytes_seeds",
    "p_value",
    "t_statistic",
];

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<u64> {
    num(v)
        .filter(|x| *x >= 0.0 && x.fract() == 0.0)
        .map(|x| x as u64)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn first<'a>(obj: &'a serde_json::Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()))
}

fn seed_claim(seed: String, v: &Value) -> SeedClaim {
    let mut c = SeedClaim {
        seed,
        ..SeedClaim::default()
    };
    match v {
        Value::Object(o) => {
            c.val_bpb = num(first(o, &["val_bpb", "bpb", "final_val_bpb"]));
            c.val_loss = num(first(o, &["val_loss", "val_loss_nats", "loss"]));
            c.artifact_bytes = int(first(o, &["artifact_bytes", "bytes_model", "model_bytes"]));
            c.total_bytes = int(first(o, &["bytes_total", "total_bytes"]));
            c.train_seconds = num(first(
                o,
                &["train_time_s", "train_seconds", "wallclock_seconds"],
            ))
            .or_else(|| num(o.get("train_time_ms")).map(|ms| ms / 1000.0));
            c.eval_seconds = num(first(
                o,
                &["eval_time_s", "ttt_eval_time_s", "eval_seconds"],
            ))
            .or_else(|| num(first(o, &["eval_time_ms", "ttt_time_ms"])).map(|ms| ms / 1000.0));
        }
        other => c.val_bpb = num(Some(other)),
    }
    c
}

/// Reads a submission.json's value. Never fails on a shape it does not know: that key is kept in `other_keys`.
pub fn parse_claims(file: &str, json: &Value) -> Claims {
    let mut c = Claims {
        file: Some(file.to_string()),
        ..Claims::default()
    };
    let Value::Object(o) = json else {
        return c;
    };
    c.name = text(o.get("name"));
    c.author = text(o.get("author"));
    c.date = text(o.get("date"));
    c.track = text(o.get("track"));
    c.val_bpb = num(first(o, &["val_bpb", "mean_val_bpb", "mean_bpb"]));
    c.val_loss = num(first(
        o,
        &[
            "val_loss",
            "mean_val_loss",
            "val_loss_nats",
            "mean_val_loss_nats",
        ],
    ));
    c.val_bpb_std = num(first(o, &["val_bpb_std", "std_bpb"]));
    c.val_loss_std = num(first(
        o,
        &["val_loss_std", "val_loss_nats_std", "std_val_loss_nats"],
    ));
    c.bytes_total = int(first(o, &["bytes_total", "artifact_bytes_max"]));
    c.bytes_code = int(first(o, &["bytes_code", "code_bytes"]));
    c.p_value = num(o.get("p_value"));
    c.t_statistic = num(o.get("t_statistic"));
    // Per-seed results: a map under `seed_results`, `seeds`, `seed_scores` or `val_bpb_seeds`; else `seeds` as a
    // bare list.
    const SEED_KEYS: [&str; 4] = ["seed_results", "seeds", "seed_scores", "val_bpb_seeds"];
    if let Some(m) = SEED_KEYS
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_object))
    {
        c.seeds = m.iter().map(|(s, v)| seed_claim(s.clone(), v)).collect();
    }
    for key in SEED_KEYS {
        match o.get(key) {
            Some(Value::Array(a)) if c.seeds.is_empty() => {
                c.seeds = a
                    .iter()
                    .map(|v| match v {
                        Value::Object(obj) => {
                            let seed = text(first(obj, &["seed", "name"])).unwrap_or_default();
                            seed_claim(seed, v)
                        }
                        other => SeedClaim {
                            seed: text(Some(other)).unwrap_or_default(),
                            ..SeedClaim::default()
                        },
                    })
                    .collect();
            }
            _ => {}
        }
    }
    if let Some(Value::Object(sizes)) = o.get("artifact_bytes_seeds") {
        for s in &mut c.seeds {
            if s.artifact_bytes.is_none() {
                s.artifact_bytes = int(sizes.get(&s.seed));
            }
        }
    }
    for (k, v) in o {
        if !KNOWN.contains(&k.as_str()) {
            c.other_keys.insert(k.clone(), v.clone());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_seed_variant() {
        let a = serde_json::json!({"val_bpb": 1.06107587, "seeds": [42, 0, 1234],
            "seed_results": {"42": {"val_bpb": 1.05989454, "artifact_bytes": 15897259, "eval_time_s": 508.8}},
            "hardware": "8xH100"});
        let c = parse_claims("submission.json", &a);
        assert_eq!(c.seeds.len(), 1);
        assert_eq!(c.seeds[0].seed, "42");
        assert_eq!(c.seeds[0].artifact_bytes, Some(15_897_259));
        assert_eq!(c.seeds[0].eval_seconds, Some(508.8));
        assert!(c.other_keys.contains_key("hardware"));
        let b = serde_json::json!({"val_bpb": 1.08, "seeds": {"0": {"val_bpb": 1.082, "bytes_total": 15991018,
            "train_time_ms": 588004, "ttt_time_ms": 293430}}});
        let c = parse_claims("submission.json", &b);
        assert_eq!(c.seeds[0].total_bytes, Some(15_991_018));
        assert_eq!(c.seeds[0].train_seconds, Some(588.004));
        assert_eq!(c.seeds[0].eval_seconds, Some(293.43));
        let e = serde_json::json!({"val_bpb": 1.0274, "seeds": [1337, 42],
            "val_bpb_seeds": {"1337": 1.026927, "42": 1.027811}, "artifact_bytes_seeds": {"42": 15305698}});
        let c = parse_claims("submission.json", &e);
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.seeds[1].val_bpb, Some(1.027811));
        assert_eq!(c.seeds[1].artifact_bytes, Some(15_305_698));
        let d = serde_json::json!({"val_bpb": "1.2", "seeds": [1, 2, 3]});
        let c = parse_claims("submission.json", &d);
        assert_eq!(c.val_bpb, Some(1.2));
        assert_eq!(
            c.seeds.iter().map(|s| s.seed.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
    }
}
