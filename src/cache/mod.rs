//! The retrieval cache: keys, the byte-bounded answer store, invalidation generations and the
//! coalescing of concurrent misses. Everything here is synchronous and socket-free except
//! [`inflight`], which only uses a `tokio::sync::watch` channel.

pub mod canonical;
pub mod digest;
pub mod generations;
pub mod inflight;
pub mod key;
pub mod lenient;
pub mod memo;
pub mod normalize;
pub mod similar;
pub mod store;
pub mod target;

pub use generations::{Generations, Scopes};
pub use key::{read_key, request_key, CacheKey, KeyedRead};
pub use store::{Entry, Lifetimes, Lookup, Stale, Store};
pub use target::{request_tenant, tenant_of, write_targets, Invalidate, Reading, Scope, Tenant};
