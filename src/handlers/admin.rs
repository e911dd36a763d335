//! The proxy's own endpoints: `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! memU has neither path, so both are served on the main listener, and on the optional admin
//! listener, which serves nothing else (its 404 is dispatch's, `handlers/mod.rs`).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::full;
use crate::outcome::Handled;
use crate::respond::json;
use crate::routes::METRICS_PATH;
use crate::state::State;

/// Serves `/metrics` or `/healthz` (a request `routes::classify` found to be `RouteClass::Admin`).
pub fn serve(state: &State, path: &str) -> Handled {
    let response = if path == METRICS_PATH {
        let mut response = Response::new(full(state.render_metrics()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    } else {
        let circuit = state.circuit.state().as_str();
        let write_circuit = state.write_circuit.state().as_str();
        let shared = match &state.shared {
            None => String::new(),
            Some(shared) => format!(
                r#","shared_cache":{{"link":"{}","stream":"{}","local_entries_trusted":{},"writes_delivered":{}}}"#,
                shared.link_state().as_str(),
                if shared.stream_up() { "up" } else { "down" },
                shared.trusts_local(),
                shared.delivered(),
            ),
        };
        json(
            StatusCode::OK,
            format!(
                r#"{{"status":"ok","circuit":"{circuit}","write_circuit":"{write_circuit}"{shared}}}"#
            )
            .into(),
        )
    };
    Handled::local(response)
}
