//! How a request is routed: the one decision ([`classify`]) dispatch and the hit lane both ask,
//! what it answers ([`RouteClass`], with its metrics label), and the path it decides on
//! ([`RequestPath`]: as sent, for the proxy's own routes; as memU's router sees it, for the table).
//! Pure.

use std::borrow::Cow;

use http::Method;

use super::table;
use super::{PathPattern, ReadRoute, Row, WriteRoute};

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass<'a> {
    /// The proxy's own `GET`/`HEAD` [`METRICS_PATH`] or [`HEALTH_PATH`].
    Admin,
    /// The proxy's own `POST` [`PREWARM_PATH`].
    Prewarm,
    Read(ReadRoute),
    Write(WriteRoute),
    /// Never cached, but watched for the task's success.
    TaskStatus {
        task_id: &'a str,
    },
    PassThrough,
}

impl RouteClass<'_> {
    /// Its label in metrics and logs.
    pub fn label(&self) -> RouteClassLabel {
        match self {
            RouteClass::Admin | RouteClass::Prewarm => RouteClassLabel::Admin,
            RouteClass::Read(_) => RouteClassLabel::Read,
            RouteClass::Write(_) => RouteClassLabel::Write,
            RouteClass::TaskStatus { .. } => RouteClassLabel::Status,
            RouteClass::PassThrough => RouteClassLabel::PassThrough,
        }
    }
}

/// A route class as metrics and logs name it: [`RouteClass::label`], and `Unknown` for a request
/// that never reached dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClassLabel {
    Read,
    Write,
    Status,
    PassThrough,
    Admin,
    Unknown,
}

impl RouteClassLabel {
    /// How many there are (metrics index their series by discriminant).
    pub const COUNT: usize = 6;

    /// The label value in metrics and logs.
    pub fn as_label(self) -> &'static str {
        match self {
            RouteClassLabel::Read => "read",
            RouteClassLabel::Write => "write",
            RouteClassLabel::Status => "status",
            RouteClassLabel::PassThrough => "passthrough",
            RouteClassLabel::Admin => "admin",
            RouteClassLabel::Unknown => "unknown",
        }
    }
}

/// The proxy's own routes, matched on the path exactly as sent, before the table.
pub const METRICS_PATH: &str = "/metrics";
pub const HEALTH_PATH: &str = "/healthz";
pub const PREWARM_PATH: &str = "/prewarm";

/// A request's path as the proxy routes it: as sent (its own routes match that exactly) and as
/// memU's router sees it ([`routed_path`], which the table matches).
#[derive(Debug, Clone)]
pub struct RequestPath<'a> {
    pub raw: &'a str,
    pub routed: Cow<'a, str>,
}

impl<'a> RequestPath<'a> {
    pub fn new(raw: &'a str) -> Self {
        Self {
            raw,
            routed: routed_path(raw),
        }
    }
}

/// The path memU routes a request on: the request path percent-decoded as uvicorn decodes it
/// (`urllib.parse.unquote`: every `%XX`, `%2F` included; invalid UTF-8 replaced).
pub fn routed_path(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// Classifies a request: the proxy's own routes by the path as sent; then, by the path memU
/// routes on, the first row of [`table::ROUTES`] that matches (a write's row also matches its
/// path with a trailing slash); anything else passes through. The one routing decision: dispatch
/// and the hit lane both ask it.
pub fn classify<'a>(method: &Method, path: &'a RequestPath<'_>) -> RouteClass<'a> {
    let read_only = method == Method::GET || method == Method::HEAD;
    match path.raw {
        METRICS_PATH | HEALTH_PATH if read_only => return RouteClass::Admin,
        PREWARM_PATH if method == Method::POST => return RouteClass::Prewarm,
        _ => {}
    }
    let path: &str = &path.routed;
    for row in table::ROUTES {
        if row.method() != method {
            continue;
        }
        let found = matches(row.path(), path).or_else(|| match row {
            Row::Write(_) => matches(row.path(), path.strip_suffix('/')?),
            Row::Read(_) | Row::Status(_) => None,
        });
        let Some(task_id) = found else {
            continue;
        };
        return match row {
            Row::Read(read) => RouteClass::Read(ReadRoute(read)),
            Row::Write(write) => RouteClass::Write(WriteRoute(write)),
            Row::Status(_) => RouteClass::TaskStatus { task_id },
        };
    }
    RouteClass::PassThrough
}

/// Whether `path` matches `pattern`; `Some(task_id)` for task patterns, `Some("")` for others.
fn matches(pattern: PathPattern, path: &str) -> Option<&str> {
    let outside_api = |base: &str| !base.contains("/api/");
    match pattern {
        PathPattern::Suffix(suffix) => path.ends_with(suffix).then_some(""),
        PathPattern::Root(suffix) => path
            .strip_suffix(suffix)
            .filter(|base| outside_api(base))
            .map(|_| ""),
        PathPattern::Task(prefix) => task_id(path, prefix).map(|(_, id)| id),
        PathPattern::RootTask(prefix) => task_id(path, prefix)
            .filter(|(base, _)| outside_api(base))
            .map(|(_, id)| id),
    }
}

/// Splits `…<prefix><id>` into the base path before the prefix and a non-empty one-segment id.
fn task_id<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let (base, id) = path.rsplit_once(prefix)?;
    (!id.is_empty() && !id.contains('/')).then_some((base, id))
}
