//! memU's latency model for the benches: log-normal (a median and a p95) with a share of stalls,
//! drawn per turn from a seed, so every setup of a bench sees the same delay for the same turn.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

/// The model's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub seed: u64,
    pub median_s: f64,
    pub p95_s: f64,
    pub stall_share: f64,
    pub stall: Duration,
}

impl Model {
    /// memU's delay for the request caused by `turn`: a pure function of (seed, turn).
    pub fn delay(&self, turn: u64) -> Duration {
        let mut rng = StdRng::seed_from_u64(self.seed ^ turn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if rng.random::<f64>() < self.stall_share {
            return self.stall;
        }
        let sigma = (self.p95_s / self.median_s).ln() / 1.645;
        let lognormal = LogNormal::new(self.median_s.ln(), sigma).expect("valid log-normal");
        Duration::from_secs_f64(lognormal.sample(&mut rng))
    }
}
