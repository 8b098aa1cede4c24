//! Every coder round-trips (property tests over random symbol streams and shapes); pgolf's rANS coder lands within
//! 0.3% of the order-0 entropy plus its tables on a realistic int6 tensor.

use pgolf::pack::codec::Coder;
use pgolf::pack::outer::{shuffle, unshuffle};
use pgolf::pack::quantize;
use pgolf::pack::rans;
use pgolf::pack::stats::order0_entropy;
use proptest::prelude::*;

/// A deterministic normal sample (Box–Muller over a 64-bit LCG).
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            ((-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()) as f32
        })
        .collect()
}

/// A realistic int6 tensor: a 512×1536 Gaussian matrix with per-row scale spread, SDClip k = 12.85.
fn realistic_int6() -> Vec<i8> {
    let (rows, cols) = (512, 1536);
    let mut w = gaussian(rows * cols, 7);
    let row_scale = gaussian(rows, 11);
    for r in 0..rows {
        let f = (0.3 * row_scale[r]).exp() * 0.02;
        w[r * cols..(r + 1) * cols].iter_mut().for_each(|x| *x *= f);
    }
    let t = quantize::sdclip_rows("w", &w, rows, cols, 6, 12.85);
    t.symbols_and_scales()
        .unwrap()
        .0
        .iter()
        .map(|&s| s as i8)
        .collect()
}

#[test]
fn rans_is_within_three_tenths_of_a_percent_of_the_entropy_plus_tables() {
    let syms = realistic_int6();
    let h = order0_entropy(syms.iter().map(|&s| s as i64));
    let encoded = rans::encode(&syms);
    assert_eq!(rans::decode(&encoded, u64::MAX).unwrap(), syms);
    let floor = h * syms.len() as f64 / 8.0 + rans::header_bytes(&encoded) as f64;
    let ratio = encoded.len() as f64 / floor;
    assert!(
        ratio < 1.003,
        "{} bytes vs entropy + tables {floor:.0} ({ratio:.5})",
        encoded.len()
    );
    assert!(
        (3.0..4.0).contains(&h),
        "a realistic int6 tensor has about 3.4 bits of entropy, got {h}"
    );
}

#[test]
fn rans_beats_brotli_and_xz_on_the_same_symbols() {
    let syms = realistic_int6();
    let bytes: Vec<u8> = syms.iter().map(|&s| s as u8).collect();
    let ours = rans::encode(&syms).len() as f64;
    let brotli = Coder::Brotli.compress(&bytes).len() as f64;
    let xz = Coder::Xz.compress(&bytes).len() as f64;
    assert!(
        ours < brotli && ours < xz,
        "rANS {ours}, brotli {brotli}, xz {xz}"
    );
}

#[test]
fn corrupt_rans_streams_are_errors() {
    let enc = rans::encode(&realistic_int6()[..50_000]);
    for cut in [1, 5, enc.len() / 2, enc.len() - 1] {
        assert!(rans::decode(&enc[..cut], u64::MAX).is_err(), "cut at {cut}");
    }
    assert!(
        rans::decode(&enc, 10)
            .unwrap_err()
            .to_string()
            .contains("more than the limit")
    );
    let mut bad = enc.clone();
    bad[0] = 9;
    assert!(rans::decode(&bad, u64::MAX).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rans_round_trips(lo in -128i32..=127, span in 0i32..=255, len in 0usize..40_000, seed in any::<u64>()) {
        let hi = (lo + span).min(127);
        let mut s = seed;
        let syms: Vec<i8> = (0..len).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Skewed toward lo so that frequencies differ.
            let u = ((s >> 33) as f64 / (1u64 << 31) as f64).powi(3);
            (lo + (u * (hi - lo + 1) as f64) as i32).min(hi) as i8
        }).collect();
        prop_assert_eq!(rans::decode(&rans::encode(&syms), u64::MAX).unwrap(), syms);
    }

    #[test]
    fn outer_coders_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20_000), stride in 1usize..5) {
        for coder in [Coder::Zlib, Coder::Zstd, Coder::Xz, Coder::Brotli] {
            let shuffled = shuffle(&data, stride);
            prop_assert_eq!(unshuffle(&shuffled, stride), data.clone());
            let packed = coder.compress(&shuffled);
            if !data.is_empty() {
                prop_assert_eq!(coder.decompress(&packed, 1 << 30).unwrap(), shuffled);
            }
        }
    }
}
