//! Percentiles for the benches: one definition, so a p99 from one bench means what it means in
//! another. Tested in `tests/percentile.rs`.

/// The nearest-rank `p`-quantile (`p` in 0..=1, e.g. 0.99 for p99) of `sorted`, which must be in
/// ascending order and not empty: the smallest sample that at least `p` of all samples are less
/// than or equal to, `sorted[⌈p·n⌉ − 1]`. Always one of the samples, never interpolated; `p = 1`
/// is the maximum, `p = 0` the minimum. With n = 100, p99 is the 99th smallest sample; with
/// n < 100 it is the maximum.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    assert!(!sorted.is_empty(), "percentile of no samples");
    assert!((0.0..=1.0).contains(&p), "p = {p} is not in 0..=1");
    let n = sorted.len();
    // The epsilon keeps p·n from rounding up past an exact rank (0.07 · 100 is 7.000000000000001).
    let rank = (p * n as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Sorts `samples` and returns the nearest-rank [`percentile`] for each of `ps`.
pub fn percentiles<T: Copy + Ord, const N: usize>(samples: &mut [T], ps: [f64; N]) -> [T; N] {
    samples.sort_unstable();
    ps.map(|p| percentile(samples, p))
}
