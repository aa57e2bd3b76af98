//! Helpers shared by the benchmarks.

#![allow(dead_code)] // each benchmark uses a different part

use std::path::Path;

/// Lets the file system finish what earlier work left it (writeback, and the
/// discards of the previous round's deleted files on a `discard` mount), so
/// that neither side pays for the other.
pub fn settle(root: &Path) {
    let dir = std::fs::File::open(root).expect("open the bench directory");
    rustix::fs::syncfs(&dir).expect("syncfs");
}

/// The geometric mean of the per-round ratios `ours / baseline`.
pub fn paired_ratio(ours: &[f64], baseline: &[f64]) -> f64 {
    let logs: f64 = ours.iter().zip(baseline).map(|(a, b)| (a / b).ln()).sum();
    (logs / ours.len() as f64).exp()
}

/// The median.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
