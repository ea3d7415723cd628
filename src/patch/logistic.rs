//! L2-regularised logistic regression, solved deterministically by Newton's method (IRLS) in f64.
//!
//! The model is `P(y = 1 | x) = σ(w·x + b)`. The fit minimises
//! `−Σ log-likelihood + λ/2 · Σ_j (w_j · sd_j)²`, where `sd_j` is the standard deviation of
//! feature `j` over the fitted rows: the penalty acts on standardised features (so λ does not
//! depend on the features' scales) and the intercept is not penalised. The returned weights are
//! for the raw features.

use crate::error::{Error, Result};

/// A fitted logistic model over raw features.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticFit {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
    /// Newton steps taken.
    pub iterations: usize,
}

impl LogisticFit {
    /// `w·x + b` of one row.
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.bias + self.weights.iter().zip(row).map(|(w, x)| w * x).sum::<f64>()
    }
}

/// `log(1 + e^t)` without overflow.
fn softplus(t: f64) -> f64 {
    t.max(0.0) + (-t.abs()).exp().ln_1p()
}

/// `σ(t)` without overflow.
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 { 1.0 / (1.0 + (-t).exp()) } else { t.exp() / (1.0 + t.exp()) }
}

/// Log-likelihood `Σ y·log σ(η) + (1 − y)·log(1 − σ(η))` of labels `y` at logits `eta`.
pub fn log_likelihood(eta: &[f64], y: &[bool]) -> f64 {
    eta.iter().zip(y).map(|(&e, &t)| if t { -softplus(-e) } else { -softplus(e) }).sum()
}

/// Mean and standard deviation (population; 1 where a feature is constant) of each column of
/// `x` (`[n, d]`, row-major).
fn column_scales(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / d.max(1)) as f64;
    let mut mean = vec![0.0; d];
    for row in x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    let mut sd = vec![0.0; d];
    for row in x.chunks(d) {
        for ((s, v), m) in sd.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let sd = sd.into_iter().map(|v| if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 }).collect();
    (mean, sd)
}

/// Solves `a · x = b` for a symmetric positive definite `a` (`[m, m]`) by Cholesky; `None` when
/// `a` is not positive definite.
fn solve_spd(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let m = b.len();
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let mut s = a[i * m + j];
            for k in 0..j {
                s -= l[i * m + k] * l[j * m + k];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * m + i] = s.sqrt();
            } else {
                l[i * m + j] = s / l[j * m + j];
            }
        }
    }
    let mut y = vec![0.0; m];
    for i in 0..m {
        let s: f64 = (0..i).map(|k| l[i * m + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * m + i];
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k * m + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * m + i];
    }
    Some(x)
}

/// Fits the model on rows `x` (`[n, d]`, row-major) with labels `y`; `lambda` > 0. An error
/// when there are no rows, a value is not finite, or one label is missing.
pub fn fit(x: &[f64], d: usize, y: &[bool], lambda: f64) -> Result<LogisticFit> {
    let n = y.len();
    if n == 0 || d == 0 || x.len() != n * d {
        return Err(Error::Invalid(format!("logistic fit needs n·d features ({n} rows of {d}), got {}", x.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Numeric("logistic fit: a feature is not finite".into()));
    }
    let positives = y.iter().filter(|&&t| t).count();
    if positives == 0 || positives == n {
        return Err(Error::Invalid("logistic fit needs both positive and negative examples".into()));
    }
    if !(lambda > 0.0 && lambda.is_finite()) {
        return Err(Error::Invalid(format!("logistic fit: the L2 weight must be positive, got {lambda}")));
    }
    let (mean, sd) = column_scales(x, d);
    let z: Vec<f64> =
        x.chunks(d).flat_map(|row| row.iter().zip(&mean).zip(&sd).map(|((v, m), s)| (v - m) / s)).collect();
    let m = d + 1; // θ = (b, w) in standardised space
    let prior = positives as f64 / n as f64;
    let mut theta = vec![0.0; m];
    theta[0] = (prior / (1.0 - prior)).ln();
    let eta_of = |theta: &[f64]| -> Vec<f64> {
        z.chunks(d).map(|row| theta[0] + row.iter().zip(&theta[1..]).map(|(a, b)| a * b).sum::<f64>()).collect()
    };
    let objective = |theta: &[f64], eta: &[f64]| {
        -log_likelihood(eta, y) + 0.5 * lambda * theta[1..].iter().map(|w| w * w).sum::<f64>()
    };
    let mut eta = eta_of(&theta);
    let mut current = objective(&theta, &eta);
    let mut iterations = 0;
    for _ in 0..200 {
        iterations += 1;
        let mut grad = vec![0.0; m];
        let mut hess = vec![0.0; m * m];
        for (i, row) in z.chunks(d).enumerate() {
            let p = sigmoid(eta[i]);
            let r = f64::from(u8::from(y[i])) - p;
            let w = (p * (1.0 - p)).max(1e-300);
            let feature = |k: usize| if k == 0 { 1.0 } else { row[k - 1] };
            for a in 0..m {
                grad[a] += r * feature(a);
                for b in 0..=a {
                    hess[a * m + b] += w * feature(a) * feature(b);
                }
            }
        }
        for a in 0..m {
            for b in 0..a {
                hess[b * m + a] = hess[a * m + b];
            }
        }
        for k in 1..m {
            grad[k] -= lambda * theta[k];
            hess[k * m + k] += lambda;
        }
        hess[0] += 1e-10;
        let Some(step) = solve_spd(&hess, &grad) else {
            return Err(Error::Numeric("logistic fit: the Hessian is not positive definite".into()));
        };
        // Newton step with backtracking: the penalised objective never increases.
        let mut scale = 1.0;
        let (mut next, mut next_eta, mut value);
        loop {
            next = theta.iter().zip(&step).map(|(t, s)| t + scale * s).collect::<Vec<_>>();
            next_eta = eta_of(&next);
            value = objective(&next, &next_eta);
            if value <= current + 1e-12 * current.abs().max(1.0) || scale < 1e-10 {
                break;
            }
            scale *= 0.5;
        }
        let moved = step.iter().map(|s| (scale * s).abs()).fold(0.0, f64::max);
        let improved = current - value;
        theta = next;
        eta = next_eta;
        current = value;
        if moved < 1e-10 || improved.abs() < 1e-13 * current.abs().max(1.0) {
            break;
        }
    }
    let weights: Vec<f64> = theta[1..].iter().zip(&sd).map(|(w, s)| w / s).collect();
    let bias = theta[0] - weights.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
    Ok(LogisticFit { weights, bias, iterations })
}
