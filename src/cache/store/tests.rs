//! The answer store: lifetimes, purges, the byte bound, buffers of their own.

use super::*;
use crate::cache::key::read_key;
use crate::cache::target::tenant_of;
use crate::routes::ReadRoute;

fn key(n: usize) -> CacheKey {
    let body = format!(r#"{{"user_id":"u","query":"q{n}"}}"#);
    read_key(
        ReadRoute::V1_RELATED,
        "/p",
        tenant_of(None),
        body.as_bytes(),
    )
    .unwrap()
    .key
}

const GEN: Generations = Generations {
    scope: 0,
    user: 0,
    all: 0,
};

fn lifetimes(ttl: u64, swr: u64, sie: u64) -> Lifetimes {
    Lifetimes {
        ttl: Duration::from_secs(ttl),
        stale_while_revalidate: Duration::from_secs(swr),
        stale_if_error: Duration::from_secs(sie),
    }
}

fn admit(store: &Store, n: usize, generations: Generations, now: Instant) {
    store.admit(
        key(n),
        &Bytes::from_static(b"{}"),
        &HeaderMap::new(),
        generations,
        now,
    );
}

#[tokio::test(start_paused = true)]
async fn entries_are_fresh_then_revalidated_then_gone() {
    let store = Store::new(1 << 20, lifetimes(300, 60, 600));
    admit(&store, 1, GEN, Instant::now());
    let at = |store: &Store| store.lookup(&key(1), GEN, Instant::now());
    assert!(matches!(at(&store), Lookup::Fresh(_)));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(matches!(at(&store), Lookup::Fresh(_)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(at(&store), Lookup::Revalidate(_)));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(matches!(at(&store), Lookup::Revalidate(_)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(at(&store), Lookup::Miss));
    assert!(matches!(
        store.stale_if_error(&key(1), &GEN, Instant::now()),
        Stale::Serve(_)
    ));
    tokio::time::advance(Duration::from_secs(540)).await;
    assert!(matches!(
        store.stale_if_error(&key(1), &GEN, Instant::now()),
        Stale::None
    ));
}

#[test]
fn superseded_entries_are_never_hits_but_may_serve_on_error() {
    let store = Store::new(1 << 20, lifetimes(300, 60, 600));
    let now = Instant::now();
    admit(&store, 1, GEN, now);
    let later = Generations {
        scope: 1,
        user: 0,
        all: 0,
    };
    assert!(matches!(store.lookup(&key(1), later, now), Lookup::Miss));
    assert!(matches!(
        store.stale_if_error(&key(1), &GEN, now),
        Stale::Serve(_)
    ));
    // A purge since the fetch started rules it out, inside the window or not.
    assert!(matches!(
        store.stale_if_error(&key(1), &later, now),
        Stale::Purged
    ));
    assert!(matches!(store.lookup(&key(2), GEN, now), Lookup::Miss));
    let no_stale = Store::new(1 << 20, lifetimes(300, 0, 0));
    admit(&no_stale, 1, GEN, now);
    assert!(matches!(
        no_stale.lookup(&key(1), GEN, now + Duration::from_secs(300)),
        Lookup::Miss
    ));
    assert!(matches!(
        no_stale.stale_if_error(&key(1), &GEN, now + Duration::from_secs(300)),
        Stale::None
    ));
}

#[test]
fn the_store_stays_within_its_byte_bound() {
    let max = 64 * 1024;
    let store = Store::new(max, lifetimes(300, 0, 0));
    let body = Bytes::from(vec![b'x'; 1000]);
    for n in 0..1000 {
        store.admit(key(n), &body, &HeaderMap::new(), GEN, Instant::now());
        assert!(store.weight() <= max, "weight {} after {n}", store.weight());
    }
    assert!(store.evictions() > 0);
    assert!(store.len() < 1000);
}

#[test]
fn admitted_answers_share_no_buffer_with_what_they_were_cut_from() {
    let store = Store::new(1 << 20, lifetimes(60, 0, 0));
    // As hyper hands them over: slices of one large read buffer.
    let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
    let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
    let body = buffer.slice(0..100);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_maybe_shared(buffer.slice(100..116)).unwrap(),
    );
    store.admit(key(1), &body, &headers, GEN, Instant::now());
    let Lookup::Fresh(entry) = store.lookup(&key(1), GEN, Instant::now()) else {
        panic!("stored");
    };
    assert_eq!(entry.body, body);
    assert!(!range.contains(&(entry.body.as_ptr() as usize)));
    let value = &entry.headers["content-type"];
    assert_eq!(value.as_bytes(), &buffer[100..116]);
    assert!(!range.contains(&(value.as_bytes().as_ptr() as usize)));
}
