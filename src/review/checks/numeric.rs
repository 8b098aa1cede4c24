//! The numeric helpers the checks share: the decimals a printed figure carries, agreement at the coarser of two
//! precisions, rounding to a number of decimals, the extremes of a list.

/// Decimals of a number as its shortest decimal form prints it (1.1194 → 4).
pub(super) fn decimals(x: f64) -> usize {
    let s = format!("{x}");
    s.split_once('.').map(|(_, f)| f.len()).unwrap_or(0)
}

/// Whether two printed values agree at the coarser one's precision: within one unit in its last place, so that a
/// truncated figure (0.94855 written 0.9485) agrees as well as a rounded one; plus 1e-9 for binary representation.
pub(super) fn agree(a: f64, a_dec: usize, b: f64, b_dec: usize) -> bool {
    let dec = a_dec.min(b_dec) as i32;
    (a - b).abs() <= 10f64.powi(-dec) + 1e-9
}

pub(super) fn decimals_of_text(s: &str) -> usize {
    s.split_once('.').map(|(_, f)| f.len()).unwrap_or(0)
}

/// Relative rounding error of a printed value.
pub(super) fn rounding(x: f64, dec: usize) -> f64 {
    0.5 * 10f64.powi(-(dec as i32)) / x.abs()
}

pub(super) fn min(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::INFINITY, f64::min)
}

pub(super) fn max(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
}
