//! Wires configuration, plugin runtime and the HTTP surfaces into one app,
//! and runs it until SIGTERM or Ctrl-C.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;

use crate::config::Config;
use crate::plugins::PluginRuntime;
use crate::plugins::watcher::{self, WatchHandle};

/// Shared state of a running host (cheap to clone).
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// The parts of a running host.
pub struct AppInner {
    /// Effective configuration.
    pub config: Config,
    /// Connector runtime.
    pub plugins: PluginRuntime,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    /// Builds every part from the configuration and loads the plugins.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let plugins = PluginRuntime::new(config.plugins.clone(), &config.cache_dir())?;
        let report = {
            let rt = plugins.clone();
            let dir = config.plugins_dir.clone();
            tokio::task::spawn_blocking(move || rt.reload_dir(&dir)).await?
        };
        for (folder, problem) in &report.failed {
            tracing::warn!(%folder, "plugin not loaded: {problem}");
        }
        tracing::info!(loaded = report.loaded.len(), failed = report.failed.len(), dir = %config.plugins_dir.display(), "plugins scanned");
        Ok(App(Arc::new(AppInner { config, plugins })))
    }

    /// The HTTP router with every surface.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(crate::api::health::router())
            .merge(crate::api::plugins::router())
            .with_state(self.clone())
    }

    /// Reasons the host cannot do its job right now (empty when ready).
    pub async fn readiness_problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts hot reload of the plugins directory.
    pub fn watch_plugins(&self) -> anyhow::Result<WatchHandle> {
        watcher::watch(self.plugins.clone(), &self.config.plugins_dir).with_context(|| {
            format!(
                "cannot watch plugins directory {}",
                self.config.plugins_dir.display()
            )
        })
    }
}

/// Runs the host until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let app = App::build(config).await?;
    let _watch = app.watch_plugins()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another leansync running? set `listen` or LEANSYNC_LISTEN"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.router())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
