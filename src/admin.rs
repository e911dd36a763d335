//! The proxy's own endpoints: `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! memU has neither path, so both are served on the main listener, and on the optional admin
//! listener, which serves nothing else.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{full, ProxyBody};
use crate::metrics::{Outcome, RouteClassLabel};
use crate::proxy::{json_response, Handled, Proxy, RequestInfo};

pub const METRICS_PATH: &str = "/metrics";
pub const HEALTH_PATH: &str = "/healthz";

/// True for the requests the proxy answers itself.
pub fn is_admin_path(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path == METRICS_PATH || path == HEALTH_PATH)
}

/// Serves `/metrics` or `/healthz` (callers check [`is_admin_path`] first).
pub fn serve(proxy: &Proxy, path: &str) -> Handled {
    let response = if path == METRICS_PATH {
        let mut response = Response::new(full(proxy.metrics.render(proxy.snapshot())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    } else {
        let circuit = proxy.circuit.state().as_str();
        json_response(format!(r#"{{"status":"ok","circuit":"{circuit}"}}"#).into())
    };
    Handled {
        response,
        outcome: Outcome::Local,
        upstream: None,
    }
}

/// The handler of the admin-only listener: admin paths, 404 for everything else.
pub async fn admin_only<B>(proxy: Arc<Proxy>, request: Request<B>) -> Response<ProxyBody> {
    let path = request.uri().path();
    let Handled {
        mut response,
        outcome,
        ..
    } = if is_admin_path(request.method(), path) {
        serve(&proxy, path)
    } else {
        let mut response = Response::new(full(r#"{"detail":"Not Found"}"#));
        *response.status_mut() = StatusCode::NOT_FOUND;
        Handled {
            response,
            outcome: Outcome::Local,
            upstream: None,
        }
    };
    response.extensions_mut().insert(RequestInfo {
        route_class: RouteClassLabel::Admin,
        outcome,
        upstream: None,
        method: request.method().clone(),
        path: path.to_owned(),
    });
    response
}
