//! Mean and 95 % confidence interval over trials (Student t).

use serde::{Deserialize, Serialize};

/// Mean of trials and the half width of its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    /// `t(0.975, n−1) × s / √n`; `None` for a single value (no spread to estimate).
    pub half_width: Option<f64>,
    pub n: usize,
}

/// Two-sided 95 % Student t quantiles `t(0.975, df)` for df = 1..=30.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// `t(0.975, df)`: exact table values up to 30 degrees of freedom; beyond, the value of the
/// nearest tabulated df below (40, 60, 120, then the normal 1.960), which errs wide.
pub fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T_975[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// Mean and 95 % confidence interval (Student t, n−1 degrees of freedom, sample standard
/// deviation) of `values`. Non-finite values are left out; `None` when none remain.
pub fn ci95(values: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let half_width = (n > 1).then(|| {
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t_975(n - 1) * var.sqrt() / (n as f64).sqrt()
    });
    Some(Interval {
        mean,
        half_width,
        n,
    })
}

impl Interval {
    /// `94.1 % ± 1.2` with `decimals` = 1 and `unit` = `" %"`; a single value is written
    /// `94.1 % (n = 1)`, with no interval.
    pub fn format(&self, decimals: usize, unit: &str) -> String {
        match self.half_width {
            Some(hw) => format!("{:.*}{unit} ± {:.*}", decimals, self.mean, decimals, hw),
            None => format!("{:.*}{unit} (n = 1)", decimals, self.mean),
        }
    }

    /// The same interval with mean and half width multiplied by `k` (fractions to %).
    pub fn scaled(&self, k: f64) -> Interval {
        Interval {
            mean: self.mean * k,
            half_width: self.half_width.map(|h| h * k),
            n: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci95_uses_student_t() {
        let i = ci95(&[90.0, 92.0, 94.0]).unwrap();
        assert_eq!(i.n, 3);
        assert_eq!(i.mean, 92.0);
        // s = 2, t(0.975, 2) = 4.303: 4.303 × 2 / √3.
        let expected = 4.303 * 2.0 / 3f64.sqrt();
        assert!((i.half_width.unwrap() - expected).abs() < 1e-12);
        assert_eq!(i.format(1, " %"), "92.0 % ± 5.0");
        // Two values: t(0.975, 1) = 12.706, s = √2 × 0.5.
        let two = ci95(&[1.0, 2.0]).unwrap();
        assert!((two.half_width.unwrap() - 12.706 * 0.5).abs() < 1e-12);
        // One value: no interval, no NaN.
        let one = ci95(&[94.1]).unwrap();
        assert_eq!(one.half_width, None);
        assert_eq!(one.format(1, " %"), "94.1 % (n = 1)");
        // Non-finite values are left out; nothing left is None.
        assert_eq!(ci95(&[f64::NAN, 5.0]).unwrap().n, 1);
        assert_eq!(ci95(&[]), None);
        assert_eq!(t_975(30), 2.042);
        assert_eq!(t_975(45), 2.021);
        assert_eq!(t_975(5000), 1.960);
        assert_eq!(
            ci95(&[0.9, 0.92, 0.94])
                .unwrap()
                .scaled(100.0)
                .format(1, " %"),
            "92.0 % ± 5.0"
        );
    }
}
