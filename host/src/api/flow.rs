//! Operator view of the flow: per-installation delivery counters, dead
//! letters with re-drive, and Prometheus `/metrics`.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ApiError;
use crate::call::CallEvent;
use crate::pipeline::Pipeline;
use crate::pipeline::metrics::InstallationFlow;
use crate::pipeline::outbox::DeliveryRow;

/// Routes that need an operator (the caller wraps them with operator auth),
/// and `/metrics`.
pub fn operator_router(pipeline: Pipeline) -> Router {
    Router::new()
        .route("/api/v1/flow", get(flow))
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/deliveries/dead", get(dead))
        .route("/api/v1/deliveries/{id}/redrive", post(redrive))
        .route("/api/v1/ingest", post(ingest))
        .with_state(pipeline)
}

/// Prometheus exposition.
pub fn metrics_router(pipeline: Pipeline) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(p): State<Pipeline>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    p.metrics().prometheus(),
                )
            }),
        )
        .with_state(pipeline)
}

async fn flow(State(p): State<Pipeline>) -> Json<Vec<InstallationFlow>> {
    Json(p.metrics().snapshot())
}

#[derive(Deserialize)]
struct Filter {
    customer: Option<String>,
    limit: Option<i64>,
}

async fn deliveries(
    State(p): State<Pipeline>,
    Query(f): Query<Filter>,
) -> Result<Json<Vec<DeliveryRow>>, ApiError> {
    p.outbox()
        .recent(f.customer.as_deref(), f.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

async fn dead(
    State(p): State<Pipeline>,
    Query(f): Query<Filter>,
) -> Result<Json<Vec<DeliveryRow>>, ApiError> {
    p.outbox()
        .dead(f.customer.as_deref())
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

/// Accepts a normalised call event from an external source (another
/// telephony bridge, replays, tests); answers once it is durably stored.
async fn ingest(
    State(p): State<Pipeline>,
    body: Result<Json<CallEvent>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(event) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            format!("expected a call event (call_id, direction, state, caller, callee, monitored, started_at_ms, ...): {e}"),
        )
    })?;
    let seq = p.submit(event).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("{e:#}"),
        )
        .with_retry_after(1)
    })?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "seq": seq }))))
}

async fn redrive(
    State(p): State<Pipeline>,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse, ApiError> {
    if p.redrive(id).await.map_err(ApiError::internal)? {
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": id, "status": "pending" })),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead",
            format!(
                "delivery {id} is not a dead letter (or does not exist); GET /api/v1/deliveries/dead lists them"
            ),
        ))
    }
}
