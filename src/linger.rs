//! Lingering close for request bodies the proxy answers without reading (a 413, an early error).
//!
//! Sits between hyper and the service stack: every HTTP/1 request body is wrapped in
//! [`Lingering`]. If the stack drops the body before its end, the rest is read and discarded in
//! the background for at most [`LINGER`] (and [`LINGER_MAX_BYTES`]), as nginx's lingering close
//! does. Without it, a client that writes the whole body before reading (Python's `http.client`)
//! finds the connection reset under its feet and never reads the answer already sent.
//!
//! Not for HTTP/2 (a stream reset there does not lose the answer), nor for a request that asked
//! `Expect: 100-continue`: its client waits for leave to send and reads the answer instead.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, Request, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// Longest time an unread body is drained after its request was answered.
pub const LINGER: Duration = Duration::from_secs(5);

/// Most bytes drained after an answer; past it the connection is closed.
pub const LINGER_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A request body that, dropped before its end, drains the rest in the background.
pub struct Lingering<B>
where
    B: Body + Send + Unpin + 'static,
{
    inner: Option<B>,
    linger: bool,
}

impl<B> Lingering<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
{
    /// Wraps the body of `request`, lingering where that helps (see the module docs).
    pub fn wrap(request: Request<B>) -> Request<Self> {
        let linger = request.version() <= Version::HTTP_11
            && !request
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        request.map(|body| Lingering {
            inner: Some(body),
            linger,
        })
    }
}

impl<B> Body for Lingering<B>
where
    B: Body + Send + Unpin + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for Lingering<B>
where
    B: Body + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.linger || body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads and discards `body` until its end, an error, [`LINGER`] or [`LINGER_MAX_BYTES`].
async fn drain<B: Body + Unpin>(mut body: B) {
    let discard = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, bytes::Buf::remaining);
            if seen > LINGER_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use std::convert::Infallible;
    use tokio::sync::mpsc;

    /// A body fed through a channel: the test sees whether anyone still reads it.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn request(
        version: Version,
        expect: Option<&str>,
    ) -> (mpsc::Sender<Bytes>, Request<Lingering<StreamBody<Chunks>>>) {
        let (tx, rx) = mpsc::channel(1);
        let mut builder = Request::builder().version(version);
        if let Some(expect) = expect {
            builder = builder.header(header::EXPECT, expect);
        }
        let request = builder.body(StreamBody::new(Chunks(rx))).unwrap();
        (tx, Lingering::wrap(request))
    }

    #[tokio::test]
    async fn an_http1_body_dropped_early_is_drained_to_its_end() {
        let (tx, request) = request(Version::HTTP_11, None);
        drop(request);
        for _ in 0..10 {
            tx.send(Bytes::from_static(b"rest"))
                .await
                .expect("still read");
        }
        drop(tx);
    }

    #[tokio::test]
    async fn no_drain_for_http2_or_a_client_that_waits_for_100_continue() {
        for (version, expect) in [
            (Version::HTTP_2, None),
            (Version::HTTP_11, Some("100-continue")),
            (Version::HTTP_11, Some("100-Continue")),
        ] {
            let (tx, request) = request(version, expect);
            drop(request);
            assert!(
                tx.send(Bytes::new()).await.is_err(),
                "{version:?} {expect:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_gives_up_after_the_linger_time() {
        let (tx, request) = request(Version::HTTP_11, None);
        drop(request);
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        tokio::time::sleep(LINGER + Duration::from_millis(1)).await;
        // The drain has dropped the receiver: the channel reports it.
        tx.closed().await;
    }
}
