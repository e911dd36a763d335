//! How many connections the process can hold, and how the accept loop reports running short.
//!
//! At start-up `main` calls [`fit_open_files`]: it raises the soft open-files limit to the hard
//! one (as nginx's `worker_rlimit_nofile` does: services often start at a soft 1024) and lowers
//! `server.max_connections` to what the limit leaves room for, so clients are refused cleanly at
//! the cap instead of the accept loop failing with EMFILE. [`Episode`] is the accept loop's
//! bookkeeping of a run of failures (out of descriptors, or at the connection cap): one log line
//! when it starts, one when it ends, a growing back-off in between.
//!
//! Not here: the accept loop itself (`server/mod.rs`).

use std::time::Duration;

use crate::config::Config;

/// Descriptors kept out of the client share: stdio, listeners, the runtime's own, DNS lookups,
/// config files, the admin listener's connections and a shared tier's sockets.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Most open connections on the admin-only listener (part of [`RESERVED_DESCRIPTORS`]).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// The client connection cap a soft open-files limit of `soft` leaves room for: half of what
/// the reserve leaves, because every client request in flight may hold one upstream socket
/// (writes and pass-through are not otherwise bounded), and never more than `configured`.
pub fn max_connections_within(configured: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    configured.min(usize::try_from(room).unwrap_or(usize::MAX).max(1))
}

/// Raises the soft open-files limit as far as allowed, lowers `config.max_connections` to fit
/// it, and logs both. A limit that cannot be read or raised leaves start-up going.
pub fn fit_open_files(config: &mut Config) {
    let configured = config.max_connections;
    match open_files() {
        Ok((before, soft)) => {
            config.max_connections = max_connections_within(configured, soft);
            tracing::info!(
                soft_before = before,
                soft,
                max_connections = config.max_connections,
                configured,
                "open-files limit"
            );
        }
        Err(error) => tracing::warn!(
            %error,
            max_connections = configured,
            "cannot read or raise the open-files limit"
        ),
    }
}

/// The soft open-files limit before and after raising it towards the hard limit.
#[cfg(unix)]
fn open_files() -> std::io::Result<(u64, u64)> {
    let (before, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    // Raising may be refused (a sandbox, macOS' OPEN_MAX); then the old limit stands.
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    Ok((before, soft))
}

#[cfg(not(unix))]
fn open_files() -> std::io::Result<(u64, u64)> {
    Err(std::io::Error::other(
        "no open-files limit on this platform",
    ))
}

/// A run of accept-loop failures of one kind: logged when it starts and when it ends, not per
/// attempt.
#[derive(Debug, Default)]
pub struct Episode {
    failures: u64,
}

impl Episode {
    /// Counts a failure; true for the first of an episode (the one to log).
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Ends the episode, if one is running, with its number of failures (to log).
    pub fn ended(&mut self) -> Option<u64> {
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }

    /// How long to wait before accepting again: 10 ms doubling per failure, at most 1 s.
    pub fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(7) as u32;
        Duration::from_millis(10 * 2u64.pow(doublings)).min(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstream_sockets_and_the_reserve() {
        for (configured, soft, cap) in [
            (10_000, 1024, 448),
            (10_000, 20_000, 9_936),
            (10_000, 1_048_576, 10_000),
            (10_000, u64::MAX, 10_000),
            (5, 1024, 5),
            (10_000, 100, 1),
        ] {
            assert_eq!(
                max_connections_within(configured, soft),
                cap,
                "{configured} under {soft}"
            );
        }
    }

    #[test]
    fn an_episode_is_logged_once_at_its_start_and_once_at_its_end() {
        let mut episode = Episode::default();
        assert_eq!(episode.ended(), None, "no episode, nothing to log");
        let logged: Vec<bool> = (0..5).map(|_| episode.failed()).collect();
        assert_eq!(logged, [true, false, false, false, false]);
        assert_eq!(episode.ended(), Some(5));
        assert_eq!(episode.ended(), None, "ended once");
        assert!(episode.failed(), "a new episode is logged again");
    }

    #[test]
    fn the_backoff_doubles_from_10_ms_to_at_most_1_s() {
        let mut episode = Episode::default();
        let waits: Vec<u64> = (0..10)
            .map(|_| {
                episode.failed();
                episode.backoff().as_millis() as u64
            })
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }
}
