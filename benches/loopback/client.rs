//! The one-connection latency phases' client: a keep-alive hyper HTTP/1.1 connection that
//! reconnects after a transport error, checks each answer's status and hit header, and reads the
//! proxy's own `Server-Timing`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::RELATED as PATH;
use crate::tally::{Answer, Tally};
use crate::targets::{hit_header, Target};

/// A keep-alive HTTP/1.1 connection (TCP_NODELAY) that reconnects after a transport error: the
/// one-connection latency phases' client.
pub struct Client {
    target: &'static Target,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(target: &'static Target) -> Self {
        let stream = TcpStream::connect(target.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
        let (sender, connection) = handshake.await.expect("handshake");
        tokio::spawn(connection);
        Client { target, sender }
    }

    /// Sends one retrieval: an [`Answer`] for a 200, else what went wrong.
    async fn send(&mut self, body: Bytes) -> Result<Answer, String> {
        let request = Request::post(PATH)
            .header(header::HOST, self.target.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer bench-key")
            .body(Full::new(body))
            .expect("request");
        let exchange = async {
            self.sender.ready().await?;
            let (parts, body) = self.sender.send_request(request).await?.into_parts();
            body.collect().await.map(|_| parts)
        };
        let name = self.target.name;
        let parts = match exchange.await {
            Ok(parts) if parts.status == StatusCode::OK => parts,
            Ok(parts) => return Err(format!("{name}: status {}", parts.status)),
            Err(error) => {
                *self = Client::connect(self.target).await;
                return Err(format!("{name}: {error}"));
            }
        };
        let is_hit = |(header, value)| parts.headers.get(header).is_some_and(|v| v == value);
        Ok((
            hit_header(self.target.kind).is_some_and(is_hit),
            proxy_time(&parts.headers),
        ))
    }

    /// One timed request into `tally`.
    pub async fn timed(&mut self, body: Bytes, tally: &mut Tally) {
        let started = Instant::now();
        let outcome = self.send(body).await;
        tally.latencies.push(started.elapsed());
        tally.record(outcome);
    }
}

/// The time spent inside the proxy's service, from its `Server-Timing: proxy;dur=<ms>` entry
/// (excludes HTTP/1 parsing, encoding and socket I/O).
fn proxy_time(headers: &http::HeaderMap) -> Option<Duration> {
    let values = headers
        .get_all("server-timing")
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    let mut entries = values.flat_map(|v| v.split(',')).map(str::trim);
    let ms = entries
        .find_map(|e| e.strip_prefix("proxy;dur="))?
        .parse::<f64>()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}
