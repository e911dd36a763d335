//! The benches' one percentile definition (`tests/support/stats.rs`): nearest rank.

#[path = "support/stats.rs"]
mod stats;

use stats::{percentile, percentiles};

#[test]
fn nearest_rank_picks_a_sample_never_an_interpolation() {
    let hundred: Vec<u32> = (1..=100).collect();
    let cases = [
        (0.0, 1),
        (0.01, 1),
        (0.07, 7),
        (0.5, 50),
        (0.95, 95),
        (0.99, 99),
        (0.995, 100),
        (1.0, 100),
    ];
    for (p, want) in cases {
        assert_eq!(percentile(&hundred, p), want, "p = {p}");
    }
    assert_eq!(percentile(&[10, 20, 30], 0.5), 20);
    assert_eq!(percentile(&[10, 20, 30, 40], 0.5), 20, "the lower middle");
    assert_eq!(percentile(&[10, 20, 30], 0.99), 30, "p99 of few is the max");
    assert_eq!(percentile(&[7], 0.5), 7);
}

#[test]
fn percentiles_sorts_first() {
    let mut samples = [5, 1, 4, 2, 3];
    assert_eq!(percentiles(&mut samples, [0.5, 0.8, 1.0]), [3, 4, 5]);
}

#[test]
#[should_panic(expected = "no samples")]
fn no_samples_is_a_bug_not_a_zero() {
    percentile::<u32>(&[], 0.5);
}
