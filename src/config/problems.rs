//! What validation reports: [`Problem`], one bad value named by its dotted key, and [`Problems`],
//! the collector every section adds to in turn so that all problems are reported together, with
//! the bounds several sections share.

use std::fmt;

/// One bad value: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    /// Records that `key` is bad.
    pub(super) fn push(&mut self, key: &'static str, message: impl Into<String>) {
        self.0.push(Problem {
            key,
            message: message.into(),
        });
    }

    /// Records `message` against `key` unless `ok`.
    pub(super) fn check(&mut self, ok: bool, key: &'static str, message: &str) {
        if !ok {
            self.push(key, message);
        }
    }

    /// Records that `key` is not greater than 0.
    pub(super) fn greater_than_0<T: PartialOrd + Default>(&mut self, value: T, key: &'static str) {
        self.check(value > T::default(), key, "must be greater than 0");
    }

    /// Records that `key` exceeds one year. Upper bounds keep every `Instant + Duration` far from
    /// overflow; millisecond keys pass their value in whole seconds.
    pub(super) fn at_most_a_year(&mut self, secs: u64, key: &'static str) {
        const YEAR_SECS: u64 = 365 * 24 * 3600;
        self.check(secs <= YEAR_SECS, key, "must not exceed one year");
    }

    /// How many problems have been found so far; a section compares it before and after its checks.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}
