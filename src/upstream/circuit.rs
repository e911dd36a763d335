//! The circuit breaker in front of memU.
//!
//! Two breakers, each a [`Circuit`] ([`Guards`]): one for writes, one for everything else, so
//! reads' failures never refuse a write.
//!
//! Closed: every request goes through; consecutive failures (timeouts, connect errors, 5xx; what
//! counts is decided in `upstream/mod.rs`, and a TLS rejection does not) are counted and any success
//! resets the count. At `failure_threshold` the circuit opens: nothing
//! is sent to memU for `cool_down` (reads are answered stale or empty, writes get an honest 503).
//! Then it is half-open: exactly one probe request goes through; success closes the circuit,
//! failure opens it again. A probe whose client went away without a verdict frees the probe slot.
//!
//! Every exchange takes a [`Ticket`] from [`Circuit::try_pass`] and reports through it; a ticket
//! dropped without a report counts as abandoned, never as a success. The breaker counts its own
//! transitions and exports them, with its state, at scrape time (its [`Collector`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::time::Instant;

use crate::config::CircuitConfig;
use crate::metrics;

/// The breaker's state, as exported in `/metrics` and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The value of the `memu_proxy_circuit_state` gauge.
    pub fn gauge(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Counters exported at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct CircuitStats {
    pub opened: u64,
    pub half_opened: u64,
    pub closed: u64,
    pub short_circuited: u64,
}

/// One breaker: the reads' (every exchange but writes) or the writes'.
#[derive(Debug)]
pub struct Circuit {
    /// What it guards: names its metrics (`circuit_*`, `write_circuit_*`) and its log lines.
    guards: Guards,
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
    short_circuited: AtomicU64,
}

/// Permission for one exchange; report its result with [`Ticket::success`] or [`Ticket::failure`].
pub struct Ticket {
    circuit: Option<Arc<Circuit>>,
    probe: bool,
}

/// Which exchanges a breaker guards. Reads' failures never refuse a write: memU-server 1.x
/// answers `/retrieve` 500 deterministically once it has hits, and one breaker for both would
/// then answer every memorize 503 (the SDK's retries fall inside the cool-down; fire-and-forget
/// clients lose the memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guards {
    /// Retrievals, task-status polls and pass-through.
    Reads,
    /// memorize, delete, commit, clear: opened only by consecutive failed writes.
    Writes,
}

impl Guards {
    fn metric_prefix(self) -> &'static str {
        match self {
            Guards::Reads => "circuit",
            Guards::Writes => "write_circuit",
        }
    }
}

impl Circuit {
    pub fn new(config: &CircuitConfig, guards: Guards) -> Self {
        Self {
            guards,
            threshold: config.failure_threshold,
            cool_down: config.cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
            half_opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
        }
    }

    /// Lets an exchange through, or says how long until memU may be tried again.
    pub fn try_pass(self: &Arc<Self>) -> Result<Ticket, Duration> {
        if self.threshold == 0 {
            return Ok(Ticket {
                circuit: None,
                probe: false,
            });
        }
        let now = Instant::now();
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(self.refuse(until - now)),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                if matches!(*state, State::Open { .. }) {
                    self.half_opened.fetch_add(1, Ordering::Relaxed);
                }
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return Err(self.refuse(self.cool_down)),
        };
        Ok(Ticket {
            circuit: Some(Arc::clone(self)),
            probe,
        })
    }

    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub fn stats(&self) -> CircuitStats {
        CircuitStats {
            opened: self.opened.load(Ordering::Relaxed),
            half_opened: self.half_opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            short_circuited: self.short_circuited.load(Ordering::Relaxed),
        }
    }

    fn refuse(&self, retry_after: Duration) -> Duration {
        self.short_circuited.fetch_add(1, Ordering::Relaxed);
        retry_after
    }

    fn record(&self, probe: bool, ok: bool) {
        let mut state = self.lock();
        match (&mut *state, probe, ok) {
            (State::HalfOpen { .. }, true, true) => {
                *state = State::Closed { failures: 0 };
                self.closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    circuit = self.guards.metric_prefix(),
                    "memU answers again: circuit closed"
                );
            }
            (State::HalfOpen { .. }, true, false) => {
                // Still failing: no new WARN per probe, the opening was logged once.
                tracing::debug!("circuit probe failed: open again");
                self.open(&mut state);
            }
            (State::Closed { failures }, false, true) => *failures = 0,
            (State::Closed { failures }, false, false) => {
                *failures += 1;
                if *failures >= self.threshold {
                    let what = match self.guards {
                        Guards::Reads => "reads answered stale or empty, other routes 503",
                        Guards::Writes => "writes answered 503 (reads are not affected)",
                    };
                    tracing::warn!(
                        circuit = self.guards.metric_prefix(),
                        failures = *failures,
                        cool_down_ms = self.cool_down.as_millis() as u64,
                        "memU is failing: circuit opened; {what}"
                    );
                    self.open(&mut state);
                }
            }
            // Results of exchanges that began before the state changed do not move it.
            _ => {}
        }
    }

    fn open(&self, state: &mut State) {
        *state = State::Open {
            until: Instant::now() + self.cool_down,
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn abandon(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probing } = &mut *state {
            *probing = false;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for Circuit {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.stats();
        let prefix = self.guards.metric_prefix();
        let (state_help, guarded) = match self.guards {
            Guards::Reads => (
                "Circuit breaker of reads, task polls and pass-through: 0 closed, 1 open, 2 half-open",
                "reads",
            ),
            Guards::Writes => (
                "Circuit breaker of writes: 0 closed, 1 open, 2 half-open",
                "writes",
            ),
        };
        metrics::gauge(
            &mut encoder,
            &format!("{prefix}_state"),
            state_help,
            None,
            self.state().gauge(),
        )?;
        metrics::counter_family(
            &mut encoder,
            &format!("{prefix}_transitions"),
            &format!("Circuit breaker transitions of {guarded}, by the state entered"),
            "to",
            &[
                ("open", stats.opened),
                ("half_open", stats.half_opened),
                ("closed", stats.closed),
            ],
        )?;
        metrics::counter(
            &mut encoder,
            &format!("{prefix}_short_circuited"),
            &format!("Upstream exchanges of {guarded} refused because their circuit was open"),
            stats.short_circuited,
        )
    }
}

impl Ticket {
    pub fn success(mut self) {
        if let Some(circuit) = self.circuit.take() {
            circuit.record(self.probe, true);
        }
    }

    pub fn failure(mut self) {
        if let Some(circuit) = self.circuit.take() {
            circuit.record(self.probe, false);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let (Some(circuit), true) = (self.circuit.take(), self.probe) {
            circuit.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(threshold: u32) -> Arc<Circuit> {
        Arc::new(Circuit::new(
            &CircuitConfig {
                failure_threshold: threshold,
                cool_down: Duration::from_secs(5),
            },
            Guards::Reads,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let c = circuit(3);
        c.try_pass().unwrap().failure();
        c.try_pass().unwrap().failure();
        c.try_pass().unwrap().success();
        assert_eq!(
            c.state(),
            CircuitState::Closed,
            "a success resets the count"
        );
        for _ in 0..3 {
            c.try_pass().unwrap().failure();
        }
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(c.try_pass().err(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = c.try_pass().unwrap();
        assert!(c.try_pass().is_err(), "only one probe at a time");
        probe.failure();
        assert_eq!(c.state(), CircuitState::Open, "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(5)).await;
        c.try_pass().unwrap().success();
        assert_eq!(c.state(), CircuitState::Closed);
        let stats = c.stats();
        assert_eq!(
            (
                stats.opened,
                stats.half_opened,
                stats.closed,
                stats.short_circuited
            ),
            (2, 2, 1, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let c = circuit(1);
        c.try_pass().unwrap().failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(c.try_pass().unwrap());
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.try_pass().unwrap().probe);
    }

    #[test]
    fn threshold_zero_disables_the_breaker() {
        let c = circuit(0);
        for _ in 0..100 {
            c.try_pass().unwrap().failure();
        }
        assert_eq!(c.state(), CircuitState::Closed);
    }
}
