//! When a client connection is idle: the bookkeeping behind `server.idle_timeout_ms`.
//!
//! Sits under hyper, around the client's socket. [`TrackedIo`] notes the time of every read or
//! write that moved a byte; [`Activity::busy`] marks a request being handled (the client rightly
//! sends nothing while memU thinks). [`Activity::idle`] completes once the connection has been
//! quiet for the timeout with no request in hand; `server/mod.rs` races it against the connection
//! and drops the connection when it wins. That covers what hyper's `header_read_timeout` does
//! not: a connection that never sends a byte, and keep-alive gaps between requests, for HTTP/1
//! and HTTP/2 alike.
//!
//! Not here: per-request deadlines (`upstream/mod.rs`) and slow request heads (hyper's own timeout).
//! No crate offers this shape: read-timeout wrappers such as `tokio-io-timeout` fire during a long
//! handler on HTTP/2, where the socket is always being read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One connection's last activity and the requests it has in hand.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Nanoseconds from `opened` to the last byte moved (or request finished).
    last: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    /// A connection opened now: its idle time starts counting at once.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Marks a request in hand until the guard drops; the idle time restarts then.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Completes once nothing has moved for `timeout` and no request is in hand.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let since = if self.busy.load(Ordering::Acquire) > 0 {
                now
            } else {
                self.last()
            };
            let deadline = since + timeout;
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request in hand on a connection (see [`Activity::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // Touch first, so the idle check never sees "not busy" with the old time.
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that reports every byte moved to its connection's [`Activity`].
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    fn moved(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Whether `idle` completes within `within` of paused time.
    async fn idles_within(activity: &Activity, within: Duration) -> bool {
        tokio::time::timeout(within, activity.idle(TIMEOUT))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_moves_nothing_is_idle_after_the_timeout() {
        let activity = Activity::new();
        assert!(!idles_within(&activity, TIMEOUT - Duration::from_millis(1)).await);
        assert!(idles_within(&activity, Duration::from_millis(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn every_byte_read_or_written_restarts_the_idle_time() {
        let activity = Activity::new();
        let (client, server) = tokio::io::duplex(64);
        let mut server = TrackedIo::new(server, Arc::clone(&activity));
        let mut client = client;
        tokio::time::advance(TIMEOUT / 2).await;
        client.write_all(b"x").await.unwrap();
        server.read_exact(&mut [0; 1]).await.unwrap();
        assert!(!idles_within(&activity, TIMEOUT / 2 + TIMEOUT / 4).await);
        server.write_all(b"y").await.unwrap();
        assert!(!idles_within(&activity, TIMEOUT - Duration::from_millis(1)).await);
        assert!(idles_within(&activity, Duration::from_millis(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_hand_is_never_idle_and_its_end_restarts_the_time() {
        let activity = Activity::new();
        let busy = activity.busy();
        assert!(!idles_within(&activity, TIMEOUT * 10).await);
        drop(busy);
        assert!(!idles_within(&activity, TIMEOUT - Duration::from_millis(1)).await);
        assert!(idles_within(&activity, Duration::from_millis(2)).await);
    }
}
