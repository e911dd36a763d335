//! The retrieval cache: keys, the byte-bounded answer store, invalidation generations and the
//! coalescing of concurrent misses. Everything here is synchronous and socket-free except
//! [`inflight`], which only uses a `tokio::sync::watch` channel.

pub mod inflight;
pub mod key;
pub mod normalize;
pub mod scope;
pub mod similar;
pub mod store;

pub use key::{
    read_key, request_key, request_tenant, tenant_of, write_scope, CacheKey, KeyedRead, Scope,
    Tenant,
};
pub use scope::{Generations, Invalidate, Scopes};
pub use store::{Entry, Lifetimes, Lookup, Store};
