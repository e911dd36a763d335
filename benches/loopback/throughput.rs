//! The throughput phase: `CONNECTIONS` keep-alive connections driven by a lean raw HTTP/1.1
//! client on this thread (the request serialised once, one request in flight per connection, only
//! the status line, `Content-Length` and the hit header parsed), counted over a fixed window with
//! the target's and the load generator's CPU read at both ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::child::CpuSnapshot;
use crate::tally::{CpuUse, Tally};
use crate::targets::Target;
use crate::{CONNECTIONS, RPS_RUN, RPS_WARMUP};

/// The throughput phase's client: one keep-alive HTTP/1.1 connection (TCP_NODELAY), the target's
/// pre-serialised request, one request in flight, and just enough parsing to check each answer.
struct RawConnection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConnection {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let buf = vec![0; 16 * 1024];
        Ok(RawConnection { stream, buf })
    }

    /// Sends `target`'s request and reads the whole answer: whether it carries the hit header.
    async fn exchange(&mut self, target: &Target) -> Result<bool, String> {
        let sent = self.stream.write_all(&target.raw_request).await;
        sent.map_err(|e| format!("send: {e}"))?;
        let (head_len, mut filled) = self.read_head().await?;
        let head = &self.buf[..head_len];
        if !head.starts_with(b"HTTP/1.1 200 ") {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(format!("status line {:?}", String::from_utf8_lossy(line)));
        }
        let length = content_length(head).ok_or("no Content-Length")?;
        let hit = target.hit_needle.as_deref();
        let hit = hit.is_some_and(|needle| position_ignore_case(head, needle).is_some());
        let end = head_len + length;
        if end > self.buf.len() {
            return Err(format!("answer of {end} bytes: larger than the buffer"));
        }
        while filled < end {
            filled += self.read_more(filled).await?;
        }
        if filled > end {
            return Err(format!("{} bytes after the answer", filled - end));
        }
        Ok(hit)
    }

    /// Reads until the end of the head: its length with the blank line, and the bytes read.
    async fn read_head(&mut self) -> Result<(usize, usize), String> {
        let mut filled = 0;
        loop {
            filled += self.read_more(filled).await?;
            if let Some(at) = position_ignore_case(&self.buf[..filled], b"\r\n\r\n") {
                return Ok((at + 4, filled));
            }
            if filled == self.buf.len() {
                return Err("head larger than the buffer".into());
            }
        }
    }

    async fn read_more(&mut self, filled: usize) -> Result<usize, String> {
        match self.stream.read(&mut self.buf[filled..]).await {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn position_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn content_length(head: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"\r\ncontent-length:";
    let rest = &head[position_ignore_case(head, NAME)? + NAME.len()..];
    let value = rest.split(|&b| b == b'\r').next()?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The throughput window, shared by the connections: counted while `measuring`, over at `stop`.
#[derive(Default)]
struct Window {
    measuring: AtomicBool,
    stop: AtomicBool,
    answered: AtomicU64,
}

/// The throughput phase's figures: requests answered in the window, its length, the target's CPU
/// in it, and the load generator's (this process's main thread, which runs every connection).
#[derive(Default)]
pub struct Throughput {
    pub requests: u64,
    pub elapsed: Duration,
    pub target_cpu: CpuUse,
    pub client_cpu: Duration,
}

impl Throughput {
    pub fn add(&mut self, other: Throughput) {
        (self.requests, self.elapsed) =
            (self.requests + other.requests, self.elapsed + other.elapsed);
        let cpu = other.target_cpu;
        self.target_cpu.add(cpu.time, cpu.requests);
        self.client_cpu += other.client_cpu;
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One connection of the throughput phase: requests back to back until the window closes;
/// answers are checked and counted inside the window, errors always.
async fn load(target: &'static Target, window: Arc<Window>) -> Tally {
    let (mut tally, mut connection) = (Tally::default(), None);
    while !window.stop.load(Ordering::Relaxed) {
        if connection.is_none() {
            match RawConnection::connect(target.addr).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    tally.record(Err(format!("{}: connect: {e}", target.name)));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let exchanged = connection.as_mut().expect("connected").exchange(target);
        let outcome = exchanged.await.map(|hit| (hit, None));
        let outcome = outcome.map_err(|e| format!("{}: {e}", target.name));
        if outcome.is_err() {
            connection = None;
        }
        if window.measuring.load(Ordering::Relaxed) {
            window
                .answered
                .fetch_add(u64::from(outcome.is_ok()), Ordering::Relaxed);
            tally.record(outcome);
        } else if outcome.is_err() {
            tally.record(outcome);
        }
    }
    tally
}

/// Opens the window after `RPS_WARMUP`, closes it `RPS_RUN` later, and reads the CPU at both
/// ends. On the one-threaded runtime no answer is counted while this runs.
async fn measure_window(target: &Target, window: &Window) -> Throughput {
    let client = || CpuSnapshot::of_thread(std::process::id(), std::process::id());
    tokio::time::sleep(RPS_WARMUP).await;
    let (target_before, client_before) = (target.cpu(), client());
    let started = Instant::now();
    window.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(RPS_RUN).await;
    window.measuring.store(false, Ordering::Relaxed);
    window.stop.store(true, Ordering::Relaxed);
    let (elapsed, requests) = (started.elapsed(), window.answered.load(Ordering::Relaxed));
    let mut target_cpu = CpuUse::default();
    if let Some((before, after)) = target_before.zip(target.cpu()) {
        target_cpu.add(after.since(&before), requests);
    }
    let client_cpu = client().since(&client_before);
    Throughput {
        requests,
        elapsed,
        target_cpu,
        client_cpu,
    }
}

/// Hit throughput over `CONNECTIONS` keep-alive connections: the checks, and the window's figures.
pub async fn throughput(target: &'static Target) -> (Tally, Throughput) {
    let window = Arc::new(Window::default());
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(load(target, Arc::clone(&window))))
        .collect();
    let measured = measure_window(target, &window).await;
    let mut total = Tally::default();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(tally) => total.merge(tally.expect("load task")),
            Err(_) => total.record(Err(format!("{}: no answer within 5 s", target.name))),
        }
    }
    (total, measured)
}
