//! `GET /api/v1/plugins`: the plugin catalogue with health; for operators,
//! dev installs from a folder and a live stream of a plugin's log lines.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;

use super::ApiError;
use super::auth::{Admin, Body};
use crate::app::App;
use crate::plugins::PluginInfo;

/// Plugin catalogue routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/plugins", get(list))
        .route("/api/v1/plugins/{name}", get(one))
}

/// Operator-only plugin routes (wrap in the operator check).
pub fn operator_router() -> Router<App> {
    Router::new()
        .route("/api/v1/plugins/dev", post(dev_install))
        .route("/api/v1/plugins/{name}/logs", get(logs))
}

async fn list(State(app): State<App>) -> Json<Vec<PluginInfo>> {
    Json(app.plugins.list())
}

fn find(app: &App, name: &str) -> Result<PluginInfo, ApiError> {
    app.plugins
        .list()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no plugin named '{name}'; GET /api/v1/plugins lists them"
            ))
        })
}

async fn one(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<PluginInfo>, ApiError> {
    find(&app, &name).map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevInstall {
    /// Absolute path of a connector folder on this host.
    path: String,
}

/// Loads (or reloads) a connector from a folder on this host.
async fn dev_install(
    State(app): State<App>,
    Admin(actor): Admin,
    Body(b): Body<DevInstall>,
) -> Result<(StatusCode, Json<PluginInfo>), ApiError> {
    if !app.config.plugins.dev_installs {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "dev_installs_off",
            "this host does not load connectors from other folders; set `plugins.dev_installs = true` (env LEANSYNC_PLUGINS_DEV_INSTALLS=true) on a development host, or copy the folder into the plugins directory",
        ));
    }
    let dir = std::path::PathBuf::from(&b.path);
    if !dir.is_absolute() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "relative_path",
            format!(
                "path {:?} is relative; give the folder's absolute path on the host",
                b.path
            ),
        ));
    }
    let plugin = app
        .plugins
        .dev_install(&dir)
        .map_err(|msg| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_invalid", msg))?;
    let name = plugin.manifest.name.clone();
    app.licensing
        .audit_operator_action(
            &actor,
            "plugin.dev_install",
            &name,
            &serde_json::json!({
                "path": plugin.dir.display().to_string(),
                "version": plugin.manifest.version.to_string(),
                "digest": plugin.digest,
            }),
        )
        .await?;
    Ok((StatusCode::OK, Json(find(&app, &name)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFilter {
    /// Only this installation's lines.
    installation: Option<String>,
}

/// Streams a plugin's log lines as server-sent events (`event: log`, data
/// JSON), from now on.
async fn logs(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(f): Query<LogFilter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    find(&app, &name)?;
    let rx = app.plugins.subscribe_logs();
    let stream = futures::stream::unfold((rx, name, f), |(mut rx, name, f)| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = match rx.recv().await {
                Ok(line) => {
                    if line.plugin != name
                        || f.installation
                            .as_ref()
                            .is_some_and(|i| *i != line.installation)
                    {
                        continue;
                    }
                    let data = serde_json::to_string(&line).unwrap_or_default();
                    Event::default().event("log").data(data)
                }
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"skipped\":{n}}}")),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(ev), (rx, name, f)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

impl super::auth::HasLicensing for App {
    fn licensing(&self) -> &crate::licensing::Licensing {
        &self.licensing
    }
}
