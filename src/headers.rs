//! Header handling shared by every route: hop-by-hop stripping, the client's `Cache-Control`
//! request directives, and the `Cache-Status` (RFC 9211) and `Server-Timing` (W3C) values the
//! proxy adds. Pure.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any named in `Connection`, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .chain(named.iter())
        .chain([&header::UPGRADE])
    {
        headers.remove(name);
    }
}

/// The request id: accepted from the client, else generated (`stack/mod.rs`); returned in the
/// response and forwarded to memU, and never stored with a cached answer (`upstream/mod.rs`).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's own latency budget for one retrieval, in milliseconds (0 = no budget). The proxy
/// consumes it; it is not forwarded to memU.
pub const BUDGET_HEADER: HeaderName = HeaderName::from_static("x-memu-budget-ms");

/// An `X-Memu-Budget-Ms` value that is not a whole number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{BUDGET_HEADER} must be a whole number of milliseconds")]
pub struct InvalidBudget;

/// The budget for one request: the client's `X-Memu-Budget-Ms` if sent (0 turns the budget off),
/// else the configured one; never longer than the hard `timeout`. An unparseable value is an
/// error, so a typo is not silently ignored.
pub fn request_budget(
    headers: &HeaderMap,
    configured: Option<Duration>,
    timeout: Duration,
) -> Result<Option<Duration>, InvalidBudget> {
    let Some(value) = headers.get(&BUDGET_HEADER) else {
        return Ok(configured.map(|b| b.min(timeout)));
    };
    let millis = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or(InvalidBudget)?;
    Ok((millis > 0).then(|| Duration::from_millis(millis).min(timeout)))
}

/// What the client's `Cache-Control` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCache {
    /// Use the cache normally.
    Normal,
    /// `no-cache`: do not answer from the cache, but store the fresh answer.
    Revalidate,
    /// `no-store`: bypass the cache entirely.
    Bypass,
}

/// Reads the request's `Cache-Control` directives.
pub fn client_cache(headers: &HeaderMap) -> ClientCache {
    let mut mode = ClientCache::Normal;
    for directive in headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let name = directive.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("no-store") {
            return ClientCache::Bypass;
        }
        if name.eq_ignore_ascii_case("no-cache") {
            mode = ClientCache::Revalidate;
        }
    }
    mode
}

/// Why a request went to memU: the RFC 9211 `fwd` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache had no usable answer.
    Miss,
    /// The client's `no-cache` ruled out a stored answer.
    Request,
    /// The cache does not handle this request (`no-store`, writes, pass-through).
    Bypass,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
        }
    }
}

/// How a response relates to the cache, rendered as one `Cache-Status` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    pub hit: bool,
    pub fwd: Option<Fwd>,
    pub stored: bool,
    pub collapsed: bool,
    pub detail: Option<&'static str>,
    /// Answered from the memory mirror (`; local`).
    pub local: bool,
}

impl CacheStatus {
    pub const NAME: &'static str = "memu-proxy";

    pub const HIT: CacheStatus = CacheStatus {
        hit: true,
        fwd: None,
        stored: false,
        collapsed: false,
        detail: None,
        local: false,
    };

    /// Forwarded because the cache does not handle this request.
    pub const BYPASS: CacheStatus = CacheStatus::forwarded(Fwd::Bypass);

    /// Forwarded with the given `fwd` reason.
    pub const fn forwarded(fwd: Fwd) -> CacheStatus {
        CacheStatus {
            hit: false,
            fwd: Some(fwd),
            stored: false,
            collapsed: false,
            detail: None,
            local: false,
        }
    }

    pub fn header_value(&self) -> HeaderValue {
        // The statuses of the hot paths are static: no formatting per request.
        if *self == Self::HIT {
            return HeaderValue::from_static("memu-proxy; hit");
        }
        if *self == Self::BYPASS {
            return HeaderValue::from_static("memu-proxy; fwd=bypass");
        }
        let mut out = String::from(Self::NAME);
        if self.hit {
            out.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(out, "; fwd={}", fwd.as_str());
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(out, "; detail={detail}");
        }
        if self.local {
            out.push_str("; local");
        }
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(Self::NAME))
    }
}

/// One `Server-Timing` entry, durations in milliseconds with microsecond precision.
pub fn server_timing(metrics: &[(&str, Duration)]) -> HeaderValue {
    // Written byte by byte (every request carries one or two): `core::fmt` with padding was a
    // visible share of a cache hit's time.
    let mut out = Vec::with_capacity(24 * metrics.len());
    let mut digits = itoa::Buffer::new();
    for (name, duration) in metrics {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b";dur=");
        // Whole microseconds as milliseconds with three decimals, without float formatting.
        let micros = duration.as_micros();
        out.extend_from_slice(digits.format(micros / 1000).as_bytes());
        let fraction = (micros % 1000) as u32;
        out.extend_from_slice(&[
            b'.',
            digit(fraction / 100),
            digit(fraction / 10),
            digit(fraction),
        ]);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u32) -> u8 {
    b'0' + (n % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "secret"),
            ("authorization", "Bearer k"),
            ("x-custom", "kept"),
            ("content-type", "application/json"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-type", "x-custom"]);
    }

    #[test]
    fn budget_from_header_or_config() {
        let ms = Duration::from_millis;
        // (header, configured ms, expected ms or Err)
        type Case = (Option<&'static str>, Option<u64>, Result<Option<u64>, ()>);
        let cases: &[Case] = &[
            (None, None, Ok(None)),
            (None, Some(500), Ok(Some(500))),
            (None, Some(5000), Ok(Some(2000))),
            (Some("300"), Some(500), Ok(Some(300))),
            (Some(" 300 "), None, Ok(Some(300))),
            (Some("0"), Some(500), Ok(None)),
            (Some("99999"), None, Ok(Some(2000))),
            (Some("fast"), Some(500), Err(())),
            (Some("-1"), None, Err(())),
            (Some("1.5"), None, Err(())),
        ];
        for (header, configured, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(v) = header {
                h.insert(BUDGET_HEADER, HeaderValue::from_str(v).unwrap());
            }
            let got = request_budget(&h, configured.map(ms), ms(2000));
            let got = got.map(|b| b.map(|d| d.as_millis() as u64)).map_err(|_| ());
            assert_eq!(&got, want, "{header:?} {configured:?}");
        }
    }

    #[test]
    fn cache_control_directives() {
        let cases = [
            ("", ClientCache::Normal),
            ("max-age=0", ClientCache::Normal),
            ("no-cache", ClientCache::Revalidate),
            ("No-Cache, max-age=5", ClientCache::Revalidate),
            ("no-cache, no-store", ClientCache::Bypass),
            ("no-store", ClientCache::Bypass),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            if !value.is_empty() {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
            }
            assert_eq!(client_cache(&h), want, "{value:?}");
        }
    }

    #[test]
    fn cache_status_values() {
        let cases = [
            (CacheStatus::HIT, "memu-proxy; hit"),
            (CacheStatus::BYPASS, "memu-proxy; fwd=bypass"),
            (
                CacheStatus {
                    stored: true,
                    ..CacheStatus::forwarded(Fwd::Miss)
                },
                "memu-proxy; fwd=miss; stored",
            ),
            (
                CacheStatus {
                    collapsed: true,
                    ..CacheStatus::forwarded(Fwd::Miss)
                },
                "memu-proxy; fwd=miss; collapsed",
            ),
            (
                CacheStatus {
                    detail: Some("timeout"),
                    ..CacheStatus::forwarded(Fwd::Miss)
                },
                "memu-proxy; fwd=miss; detail=timeout",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(status.header_value(), want);
        }
    }

    #[test]
    fn server_timing_format() {
        let v = server_timing(&[
            ("cache", Duration::from_micros(20)),
            ("upstream", Duration::from_micros(812_400)),
        ]);
        assert_eq!(v, "cache;dur=0.020, upstream;dur=812.400");
        for (micros, text) in [
            (0, "proxy;dur=0.000"),
            (5, "proxy;dur=0.005"),
            (1_005, "proxy;dur=1.005"),
            (99_999, "proxy;dur=99.999"),
            (1_234_567_891, "proxy;dur=1234567.891"),
        ] {
            let v = server_timing(&[("proxy", Duration::from_micros(micros))]);
            assert_eq!(v, text);
        }
        // Below a microsecond is rounded down, as before.
        let v = server_timing(&[("proxy", Duration::from_nanos(1_999))]);
        assert_eq!(v, "proxy;dur=0.001");
    }
}
