//! `GET /api/v1/plugins`: the plugin catalogue with health.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use crate::app::App;
use crate::plugins::PluginInfo;

/// Plugin catalogue routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/plugins", get(list))
        .route("/api/v1/plugins/{name}", get(one))
}

async fn list(State(app): State<App>) -> Json<Vec<PluginInfo>> {
    Json(app.plugins.list())
}

async fn one(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<PluginInfo>, ApiError> {
    app.plugins
        .list()
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no plugin named '{name}'; GET /api/v1/plugins lists them"
            ))
        })
}
