//! The proxy's own error responses, built in one place.
//!
//! Each condition maps to exactly one status in [`ProxyError::status`] (an exhaustive match), and
//! to a FastAPI-shaped `{"detail": "..."}` body, the shape memU's own errors have and its SDK reads.
//! These are only ever used where the proxy cannot honestly answer otherwise: reads that fail get
//! the empty fallback instead (see `fallback.rs`). Handlers return them; dispatch
//! (`handlers/mod.rs`) turns them into responses, and nothing else does.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{full, BoxError, ProxyBody};
use crate::headers::InvalidBudget;
use crate::upstream::UpstreamError;

/// A request the proxy answers itself with an error status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request body exceeds the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body")]
    BodyRead(#[source] BoxError),
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    SlowUpload(std::time::Duration),
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(#[source] http::Error),
    #[error(transparent)]
    InvalidBudget(#[from] InvalidBudget),
    #[error(transparent)]
    InvalidPrewarm(#[from] PrewarmError),
    /// A path the admin-only listener does not serve.
    #[error("Not Found")]
    NotFound,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// What is wrong with a `POST /prewarm` body.
#[derive(Debug, thiserror::Error)]
pub enum PrewarmError {
    #[error("invalid prewarm body: {0}")]
    Body(#[source] serde_json::Error),
    #[error("at most {max} queries per prewarm")]
    TooManyQueries { max: usize },
    #[error("min_similarity must be a number")]
    MinSimilarity,
}

impl ProxyError {
    /// The HTTP status this error is reported with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyRead(_) | ProxyError::BadRequest(_) | ProxyError::InvalidBudget(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::InvalidPrewarm(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::SlowUpload(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::Upstream(e) => match e {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Connect(_)
                | UpstreamError::Tls(_)
                | UpstreamError::Exchange(_)
                | UpstreamError::TooLarge(_) => StatusCode::BAD_GATEWAY,
                UpstreamError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
                UpstreamError::SlowUpload(_) => StatusCode::REQUEST_TIMEOUT,
                UpstreamError::CircuitOpen(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The response the client receives.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = json!({ "detail": self.to_string() }).to_string();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        if let ProxyError::Upstream(UpstreamError::CircuitOpen(retry_after)) = &self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::tls::TlsRejection;
    use std::time::Duration;

    #[test]
    fn each_condition_has_its_status() {
        let io = || -> BoxError { "boom".into() };
        let cases = [
            (ProxyError::BodyTooLarge { limit: 1 }, 413),
            (ProxyError::BodyRead(io()), 400),
            (ProxyError::SlowUpload(Duration::from_secs(2)), 408),
            (InvalidBudget.into(), 400),
            (PrewarmError::MinSimilarity.into(), 422),
            (PrewarmError::TooManyQueries { max: 16 }.into(), 422),
            (ProxyError::NotFound, 404),
            (UpstreamError::Timeout(Duration::from_secs(2)).into(), 504),
            (UpstreamError::Exchange(io()).into(), 502),
            (
                UpstreamError::Tls(TlsRejection::Certificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
                .into(),
                502,
            ),
            (UpstreamError::TooLarge(10).into(), 502),
            (UpstreamError::RequestTooLarge.into(), 413),
            (UpstreamError::ClientBody(io()).into(), 400),
            (
                UpstreamError::SlowUpload(Duration::from_secs(2)).into(),
                408,
            ),
            (
                UpstreamError::CircuitOpen(Duration::from_millis(1500)).into(),
                503,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            if status == 503 {
                assert_eq!(response.headers()[header::RETRY_AFTER], "2");
            }
        }
    }

    #[test]
    fn retry_after_is_in_whole_seconds_rounded_up() {
        for (ms, secs) in [
            (1, "1"),
            (999, "1"),
            (1_000, "1"),
            (1_001, "2"),
            (5_000, "5"),
        ] {
            let error = ProxyError::from(UpstreamError::CircuitOpen(Duration::from_millis(ms)));
            let response = error.into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], secs, "{ms} ms");
        }
    }
}
