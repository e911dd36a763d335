//! Where a memorize's scopes are re-warmed once it succeeds (`listing.rs` does it): which read
//! of its generation, under which base path. Pure, beside the mirror the re-warm refills.

use crate::routes::{table, Generation, ReadRoute, WriteKind, WriteRoute};

/// Where a memorize's scopes are re-warmed once it succeeds: under its base path, with its
/// generation's query-bearing read (whose listing and repeated reads are fetched again).
#[derive(Debug, Clone, PartialEq)]
pub struct Rewarm {
    pub query: ReadRoute,
    pub base: Box<str>,
}

impl Rewarm {
    /// For a memorize of `route` at `path`; `None` for a purge, or a generation without one. Pure.
    pub fn after(route: WriteRoute, path: &str) -> Option<Rewarm> {
        if route.kind != WriteKind::Supersede {
            return None;
        }
        let query = match route.generation {
            Generation::V1 => &table::V1_RELATED,
            Generation::V3 => &table::V3_RETRIEVE,
            Generation::Server => &table::SERVER_RETRIEVE,
            Generation::V4 => return None,
        };
        let suffix = route.path.suffix()?;
        Some(Rewarm {
            query: ReadRoute(query),
            base: path.strip_suffix(suffix)?.into(),
        })
    }
}
