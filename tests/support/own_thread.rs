//! An async server on its own thread and tokio runtime, until dropped: the loopback bench runs the
//! stand-in memU and the proxy this way so that neither shares a scheduler with the load generator
//! (or with each other), as they would not in production.

use std::future::Future;
use std::ops::Deref;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// A server running on its own thread; derefs to the handle it sent through [`Ready`]. Dropping it
/// completes the server's [`Stop`] and waits for the thread to finish.
pub struct OwnThread<T> {
    handle: T,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Hands the server's handle (its address, say) back to the thread that started it.
pub struct Ready<T>(mpsc::Sender<T>);

impl<T> Ready<T> {
    pub fn send(self, handle: T) {
        let _ = self.0.send(handle);
    }
}

/// Completes when the [`OwnThread`] guard is dropped.
pub struct Stop(oneshot::Receiver<()>);

impl Stop {
    pub async fn wait(self) {
        let _ = self.0.await; // the guard drops the sender: Err(RecvError) means stop too
    }
}

impl<T: Send + 'static> OwnThread<T> {
    /// Runs `serve(ready, stop)` to completion on a new thread named `name`, inside `runtime`;
    /// returns once `serve` has sent its handle. `serve` should bind, send the handle, then serve
    /// until `stop` completes; tasks it spawned on `runtime` end when the runtime is dropped.
    ///
    /// Panics if `serve` returns (or panics) without sending a handle.
    pub fn start<F, Fut>(name: &str, runtime: Runtime, serve: F) -> Self
    where
        F: FnOnce(Ready<T>, Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (stop, stopped) = oneshot::channel();
        let (ready, handle) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || runtime.block_on(serve(Ready(ready), Stop(stopped))))
            .expect("spawn a server thread");
        let handle = handle
            .recv()
            .unwrap_or_else(|_| panic!("{name} stopped before it was ready"));
        OwnThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl<T> Deref for OwnThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.handle
    }
}

impl<T> Drop for OwnThread<T> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A server that panicked has said so on stderr; don't panic again while dropping.
            let _ = thread.join();
        }
    }
}
