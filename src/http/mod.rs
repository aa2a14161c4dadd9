//! The HTTP side of the service (`[http]`, off unless `http.listen` is set): `GET /healthz`
//! (the process answers), `GET /readyz` (the gateway session is identified, the store answers
//! a query, the service is not stopping — JSON with the reason when not), `GET /metrics`
//! (Prometheus' exposition of the figures the metrics log reports), and `POST
//! /v1/conversations/{name}/messages` (`prompts`: a prompt from CI or a webhook, with a bearer
//! token). Loopback only unless `http.allow_remote`.

pub mod prompts;

use std::net::SocketAddr;
use std::time::Duration;

use actix::Addr;
use actors::discord::GatewayProbe;
use actors::metrics::{MetricsActor, RenderMetrics, CONTENT_TYPE};
use actors::shutdown::Shutdown;
use actors::store::{CheckStore, SessionStoreActor};
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tracing::{info, warn};

/// How long `/readyz` waits for the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Renders `/metrics`.
    pub metrics: Addr<MetricsActor>,
    /// Asked a query for `/readyz`.
    pub store: Addr<SessionStoreActor>,
    /// The gateway's session state; `None` without a Discord front end.
    pub gateway: Option<GatewayProbe>,
    /// The service's stop.
    pub shutdown: Shutdown,
    /// Prompts over HTTP; `None` without a registry to queue them in.
    pub prompts: Option<prompts::Prompts>,
    /// `http.max_body_bytes`.
    pub max_body_bytes: usize,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    let prompts = state.prompts.clone().map(|p| {
        Router::new()
            .route(
                "/v1/conversations/{name}/messages",
                post(prompts::post_message),
            )
            .layer(DefaultBodyLimit::max(state.max_body_bytes))
            .with_state(p)
    });
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match prompts {
        Some(p) => base.merge(p),
        None => base,
    }
}

/// Serves on `listener` for the life of the process: while the service stops, `/readyz`
/// says so.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) {
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, "HTTP listening (/healthz, /readyz, /metrics, /v1/conversations/{{name}}/messages)");
    if let Err(e) = axum::serve(listener, router(state)).await {
        warn!(error = %e, "the HTTP server stopped");
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let gateway = match &s.gateway {
        Some(g) => Some(g.is_identified().await),
        None => None,
    };
    let store = tokio::time::timeout(STORE_TIMEOUT, s.store.send(CheckStore)).await;
    let store_ok = matches!(store, Ok(Ok(Ok(()))));
    let draining = s.shutdown.is_begun();
    let reason = if draining {
        Some("the service is stopping")
    } else if gateway == Some(false) {
        Some("the Discord gateway is not connected")
    } else if !store_ok {
        Some("the store does not answer")
    } else {
        None
    };
    let body = json!({
        "ready": reason.is_none(),
        "reason": reason,
        "checks": {
            "gateway": match gateway { Some(true) => "connected", Some(false) => "down", None => "none" },
            "store": if store_ok { "ok" } else { "failing" },
            "draining": draining,
        },
    });
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    match s.metrics.send(RenderMetrics).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the metrics actor stopped\n",
        )
            .into_response(),
    }
}

/// Whether `addr` may be listened on: loopback, or anything with `allow_remote`.
pub fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address: the endpoints have no authentication of their own; set http.allow_remote = true to listen there anyway"
        ))
    }
}
