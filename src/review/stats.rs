//! The significance arithmetic reviewers apply (spec §6.3): mean, sample standard deviation (n − 1), and the
//! one-sided Welch t-test of a candidate's per-seed scores against a baseline's.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (divides by n − 1); None below two values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    Some((xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

/// A one-sided Welch test that the candidate's mean is LOWER than the baseline's by more than `margin`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Welch {
    pub candidate_mean: f64,
    pub baseline_mean: f64,
    /// baseline − candidate (positive: the candidate is better).
    pub improvement: f64,
    pub margin: f64,
    pub t: f64,
    pub df: f64,
    /// P(T ≥ t) under the null that the improvement is `margin`.
    pub p_one_sided: f64,
}

/// Welch's t = ((m_b − m_c) − margin) / sqrt(s_c²/n_c + s_b²/n_b), df by Welch–Satterthwaite. Needs two values on
/// each side and a spread that is not zero on both.
pub fn welch_one_sided(candidate: &[f64], baseline: &[f64], margin: f64) -> Option<Welch> {
    let (sc, sb) = (sample_std(candidate)?, sample_std(baseline)?);
    let (nc, nb) = (candidate.len() as f64, baseline.len() as f64);
    let (vc, vb) = (sc * sc / nc, sb * sb / nb);
    let se2 = vc + vb;
    if se2 <= 0.0 || !se2.is_finite() {
        return None;
    }
    let (mc, mb) = (mean(candidate), mean(baseline));
    let t = ((mb - mc) - margin) / se2.sqrt();
    let df = se2 * se2 / (vc * vc / (nc - 1.0) + vb * vb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(Welch {
        candidate_mean: mc,
        baseline_mean: mb,
        improvement: mb - mc,
        margin,
        t,
        df,
        p_one_sided: 1.0 - dist.cdf(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_matches_scipy() {
        // scipy.stats.ttest_ind(b, c, equal_var=False, alternative="greater") on these values:
        // t = 4.495611895592125, df = 3.6372795969773306, p = 0.006738418495292764 (computed once, SciPy 1.17.1).
        let c = [1.0, 1.1, 1.05];
        let b = [1.2, 1.25, 1.18];
        let w = welch_one_sided(&c, &b, 0.0).unwrap();
        assert!((w.t - 4.495_611_895_592_125).abs() < 1e-10, "{w:?}");
        assert!((w.df - 3.637_279_596_977_330_6).abs() < 1e-10, "{w:?}");
        assert!(
            (w.p_one_sided - 0.006_738_418_495_292_764).abs() < 1e-10,
            "{w:?}"
        );
        assert_eq!(sample_std(&[1.0]), None);
        assert!(welch_one_sided(&[1.0, 1.0], &[2.0, 2.0], 0.0).is_none());
    }
}
