//! Request bodies that announce their length and then misbehave, as uploads do.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::QUERY;

/// A body that announces its length and then fails, as an aborted upload does.
pub struct Aborted;

impl Body for Aborted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::ErrorKind::ConnectionReset.into())))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(QUERY.len() as u64)
    }
}

/// A body that announces its length and arrives `after` the head, as a slow upload does.
pub struct Slow {
    wait: Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl Slow {
    pub fn new(after: std::time::Duration) -> Self {
        Slow {
            wait: Box::pin(tokio::time::sleep(after)),
            data: Some(Bytes::from_static(QUERY.as_bytes())),
        }
    }
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::ready!(self.wait.as_mut().poll(cx));
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(QUERY.len() as u64)
    }
}
