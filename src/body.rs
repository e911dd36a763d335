//! Body types shared by the server side and the upstream client.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// The error type of every body the proxy handles.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or upstream-request body: buffered bytes or a stream passed through.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// True when `error` (or one of its sources) is a body-size limit being exceeded.
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A client's request body on its way to memU, watched: its errors are marked as the client's
/// ([`ClientBodyError`]), and [`ClientBody::finished`] says whether it was sent whole. Without
/// this, a broken or too slow upload would look like memU failing (a 502 or 504 counted by the
/// circuit breaker) when the fault is the client's.
pub struct ClientBody {
    inner: ProxyBody,
    finished: Arc<AtomicBool>,
}

/// The client's side of a forwarded request failed: bad framing, an aborted upload.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

impl ClientBody {
    pub fn new(inner: ProxyBody) -> Self {
        let finished = Arc::new(AtomicBool::new(inner.is_end_stream()));
        Self { inner, finished }
    }

    /// Set once the whole body has been read from the client.
    pub fn finished(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.finished)
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.finished.store(true, Ordering::Release);
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled.map_err(|error| Box::new(ClientBodyError(error)) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// True when `error` (or one of its sources) is a failure of the client's own body.
pub fn is_client_body_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<ClientBodyError>() {
            return true;
        }
        current = e.source();
    }
    false
}
