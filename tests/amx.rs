//! The AMX tile products against the f64 product of their bf16-rounded operands, bit for bit against each other
//! (packed on the fly, prepacked, from bf16 activations). They need a CPU with AMX-BF16 and a kernel that grants the
//! tile state; where either is missing the tests are listed as ignored, marked `[needs AMX-BF16]`, and the reason is
//! printed first, so that a run without AMX never reads as a pass.

use libtest_mimic::{Arguments, Failed, Trial};
use pgolf::kernels::amx::{
    PackedA, PackedB, available, bf16_bits, matmul_bt, matmul_bt_bf16, matmul_packed,
    matmul_prepacked, why_not,
};

fn main() {
    let args = Arguments::from_args();
    let amx = available();
    if !amx {
        println!(
            "AMX tests not run: {} (they run where the CPU has AMX-BF16)",
            why_not()
        );
    }
    let tests: [(&str, fn()); 4] = [
        (
            "packed_kn_products_over_a_prefix",
            packed_kn_products_over_a_prefix,
        ),
        (
            "prepacked_a_matches_packing_on_the_fly",
            prepacked_a_matches_packing_on_the_fly,
        ),
        (
            "bf16_activations_give_the_same_products",
            bf16_activations_give_the_same_products,
        ),
        (
            "products_are_the_rounded_operands_product",
            products_are_the_rounded_operands_product,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let trial = Trial::test(name, move || {
                std::panic::catch_unwind(test).map_err(|e| {
                    let message = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Failed::from(message)
                })
            });
            if amx {
                trial
            } else {
                trial.with_kind("needs AMX-BF16").with_ignored_flag(true)
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Deterministic operands in [−1.4, 1.4] (A's and B's patterns of the tests below).
fn pattern_a(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 29 % 83) as f32 - 41.0) / 30.0)
        .collect()
}

fn pattern_b(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 31 % 89) as f32 - 44.0) / 35.0)
        .collect()
}

fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// B given as [k, n], used for fewer of its k rows and columns than it holds (attention's causal blocks).
fn packed_kn_products_over_a_prefix() {
    let (rows, k_all, n_all, k, cols) = (40, 100, 70, 45, 33);
    let a = pattern_a(rows * k_all);
    let b = pattern_b(k_all * n_all);
    let packed = PackedB::from_kn(&b, k_all, n_all);
    let mut c = vec![f32::NAN; rows * cols];
    matmul_packed(&a, k_all, rows, k, &packed, cols, &mut c, cols);
    for r in 0..rows {
        for j in 0..cols {
            let want: f64 = (0..k)
                .map(|kk| {
                    from_bf16(bf16_bits(a[r * k_all + kk])) as f64
                        * from_bf16(bf16_bits(b[kk * n_all + j])) as f64
                })
                .sum();
            assert!((c[r * cols + j] as f64 - want).abs() <= 1e-5, "({r}, {j})");
        }
    }
}

/// A packed by the caller row by row gives what `matmul_packed` gives from the same f32 rows, bit for bit, also
/// after a reshape to fewer rows and a shorter k (the stale padding is cleared).
fn prepacked_a_matches_packing_on_the_fly() {
    let (k_all, n) = (90, 40);
    let b = pattern_b(k_all * n);
    let packed_b = PackedB::from_kn(&b, k_all, n);
    let mut a_packed = PackedA::zeroed(64, k_all);
    for &(rows, k) in &[(64, 90), (37, 61), (5, 3)] {
        let a = pattern_a(rows * k);
        a_packed.reshape(rows, k);
        for r in 0..rows {
            let row = a_packed.row_mut(r);
            row.fill(0);
            for kk in 0..k {
                row[kk] = bf16_bits(a[r * k + kk]);
            }
        }
        let mut want = vec![f32::NAN; rows * n];
        matmul_packed(&a, k, rows, k, &packed_b, n, &mut want, n);
        let mut got = vec![f32::NAN; rows * n];
        matmul_prepacked(&a_packed, &packed_b, n, &mut got, n);
        assert_eq!(got, want, "{rows} × {k}");
    }
}

/// A given already in bf16 gives what rounding it on the fly gives, bit for bit: in place where k is a multiple
/// of 32 and the block is full, padded otherwise.
fn bf16_activations_give_the_same_products() {
    for &(m, n, k) in &[(70, 40, 64), (64, 33, 45), (5, 32, 96)] {
        let a = pattern_a(m * k);
        let b = pattern_b(n * k);
        let bits: Vec<u16> = a.iter().map(|&x| bf16_bits(x)).collect();
        assert_eq!(
            matmul_bt_bf16(&bits, &b, m, n, k),
            matmul_bt(&a, &b, m, n, k),
            "{m}×{n}×{k}"
        );
    }
}

/// Odd sizes (padding in every dimension) against the f64 product of the bf16-rounded operands.
fn products_are_the_rounded_operands_product() {
    for &(m, n, k) in &[(1, 1, 1), (33, 47, 65), (64, 96, 512), (100, 17, 31)] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0)
            .collect();
        let b: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 41.0)
            .collect();
        let c = matmul_bt(&a, &b, m, n, k);
        for r in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|kk| {
                        from_bf16(bf16_bits(a[r * k + kk])) as f64
                            * from_bf16(bf16_bits(b[j * k + kk])) as f64
                    })
                    .sum();
                let scale: f64 = (0..k)
                    .map(|kk| (a[r * k + kk] as f64 * b[j * k + kk] as f64).abs())
                    .sum();
                let got = c[r * n + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * scale.max(1.0),
                    "{m}×{n}×{k} at ({r}, {j}): {got} vs {want}"
                );
            }
        }
    }
}
