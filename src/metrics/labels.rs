//! Label values of the metric families about writes and stale answers: fixed enums.

/// Why a stale answer within its window was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaleRefusal {
    /// A delete or clear of its scope came after its fetch started.
    Purged,
    /// The shared tier's invalidation stream is lost: a purge may have gone unheard.
    StreamLost,
}

impl StaleRefusal {
    pub(super) fn as_label(self) -> &'static str {
        match self {
            StaleRefusal::Purged => "purged",
            StaleRefusal::StreamLost => "stream_lost",
        }
    }
}

/// What a write whose scope could not be read invalidated instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unscoped {
    /// Every scope of the user ids a lenient scan found.
    Users,
    /// Every scope.
    Everything,
}

/// Why the proxy fetched a read on its own for the memory mirror (`listing.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MirrorFetch {
    /// The first read of a scope: its listing.
    FirstSight,
    /// A memorize of the scope succeeded: its listing and repeated reads again.
    Rewarm,
}

impl MirrorFetch {
    pub(super) fn as_label(self) -> &'static str {
        match self {
            MirrorFetch::FirstSight => "first_sight",
            MirrorFetch::Rewarm => "rewarm",
        }
    }
}
