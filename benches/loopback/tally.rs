//! What the phases record: each answer's outcome (200, cache hit, errors) and latency, and the
//! target's CPU time over measured segments with the requests answered in them.

use std::time::Duration;

/// A 200 answer: was it a cache hit, and the proxy's own `Server-Timing` for it, if any.
pub type Answer = (bool, Option<Duration>);

/// Outcomes of one phase: latencies, 200s, cache hits, and errors (the first one kept).
#[derive(Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub server_times: Vec<Duration>,
    pub ok: u64,
    pub hits: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn record(&mut self, outcome: Result<Answer, String>) {
        match outcome {
            Ok((hit, server_time)) => {
                (self.ok, self.hits) = (self.ok + 1, self.hits + u64::from(hit));
                self.server_times.extend(server_time);
            }
            Err(error) => (self.errors, self.first_error) = (self.errors + 1, Some(error)),
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.hits += other.hits;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Forgets a warmup's successes; its errors still count.
    pub fn forget_warmup(&mut self) {
        (self.latencies, self.server_times) = (Vec::new(), Vec::new());
        (self.ok, self.hits) = (0, 0);
    }
}

/// CPU time spent over measured segments, and the requests answered in them.
#[derive(Default, Clone, Copy)]
pub struct CpuUse {
    pub time: Duration,
    pub requests: u64,
}

impl CpuUse {
    pub fn add(&mut self, time: Duration, requests: u64) {
        (self.time, self.requests) = (self.time + time, self.requests + requests);
    }

    /// µs per request; `None` without requests.
    pub fn per_request_us(self) -> Option<f64> {
        (self.requests > 0).then(|| self.time.as_secs_f64() * 1e6 / self.requests as f64)
    }
}
