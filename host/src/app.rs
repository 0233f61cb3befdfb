//! Wires configuration, store, licensing, plugins, pipeline, telephony and
//! the HTTP surfaces into one app, and runs it until SIGTERM or Ctrl-C.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;

use crate::api;
use crate::config::Config;
use crate::dialing::ClickToCall;
use crate::licensing::{Licensing, Sealer};
use crate::pipeline::{Outbox, Pipeline, Settings};
use crate::plugins::PluginRuntime;
use crate::plugins::watcher::{self, WatchHandle};
use crate::store::Db;
use crate::telephony::sim::SimProvider;
use crate::telephony::{Provider, TelephonyHub};
use crate::wiring::{Catalog, HostBridge, Licensed, Telephony};

/// Shared state of a running host (cheap to clone).
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// The parts of a running host.
pub struct AppInner {
    /// Effective configuration.
    pub config: Config,
    /// Connector runtime.
    pub plugins: PluginRuntime,
    /// Database.
    pub db: Db,
    /// Licensing service.
    pub licensing: Licensing,
    /// Call pipeline.
    pub pipeline: Pipeline,
    /// Telephony: the host's provider and the telephony accounts' own
    /// connections.
    pub telephony: Arc<TelephonyHub>,
    /// The simulated PBX, when it is the provider.
    pub sim: Option<Arc<SimProvider>>,
    /// Click-to-call.
    pub dialer: Arc<ClickToCall>,
    /// Licensing adapters.
    pub licensed: Licensed,
    /// State every host of the database agrees on (portal sessions,
    /// sign-in and click-to-call limits); in memory on SQLite.
    pub shared: crate::store::shared::Shared,
    /// Which host runs each SIP connection.
    pub ownership: crate::telephony::ownership::Ownership,
}

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Opens the database and licensing alone (for CLI commands that run
/// without a host: bootstrap, reports).
pub async fn open_licensing(
    config: &Config,
    plugins: PluginRuntime,
) -> anyhow::Result<(Db, Licensing)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let db = Db::connect(&config.database_url()).await?;
    let sealer = Sealer::from_key_file(&config.secret_key_path())?;
    let licensing = Licensing::open(db.clone(), sealer, Arc::new(Catalog(plugins)))
        .await?
        .with_notify_webhook(&config.notify_webhook)
        .with_token_ttl_days(config.admin_token_ttl_days)
        .with_sim_accounts(config.telephony.sim_accounts);
    Ok((db, licensing))
}

/// This host's lasting id among the hosts of one database, kept in
/// `data_dir/host.id` (made on first start): a restarted host resumes the
/// deliveries it owned at once. Hosts must not share a data directory.
fn host_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("host.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = crate::licensing::id("host");
            std::fs::write(&path, &id)
                .with_context(|| format!("cannot write the host id to {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Claims and renews this host's SIP connections every third of the lease
/// and applies who owns what (see `telephony::ownership`).
async fn keep_telephony_leases(
    ownership: crate::telephony::ownership::Ownership,
    telephony: Arc<TelephonyHub>,
    lines: tokio::sync::watch::Receiver<Arc<crate::licensing::Lines>>,
    host_is_sip: bool,
) {
    let mut tick = tokio::time::interval(ownership.lease() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut connections: Vec<String> = lines
            .borrow()
            .accounts
            .iter()
            .filter(|(_, l)| l.provider == "sip")
            .map(|(id, _)| id.clone())
            .collect();
        if host_is_sip {
            connections.push(crate::telephony::ownership::HOST_CONNECTION.to_owned());
        }
        let statuses = telephony.owned_statuses();
        match ownership.claim(&connections, &statuses).await {
            Ok(owners) => {
                let before = telephony.owners().1;
                let now: std::collections::BTreeMap<String, String> = owners
                    .iter()
                    .map(|(c, o)| (c.clone(), o.host.clone()))
                    .collect();
                for (c, o) in &now {
                    if o == ownership.me() && before.get(c) != Some(o) {
                        tracing::info!(connection = %c, "this host owns the SIP connection now");
                    }
                }
                telephony.set_owners(ownership.me(), owners).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the SIP connection leases; retrying")
            }
        }
    }
}

impl App {
    /// Builds every part from the configuration and loads the plugins.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let plugins = PluginRuntime::new(config.plugins.clone(), &config.cache_dir())?;
        plugins.egress().deny_own_listener(config.listen);
        let report = {
            let rt = plugins.clone();
            let dir = config.plugins_dir.clone();
            tokio::task::spawn_blocking(move || rt.reload_dir(&dir)).await?
        };
        for (folder, problem) in &report.failed {
            tracing::warn!(%folder, "plugin not loaded: {problem}");
        }
        tracing::info!(loaded = report.loaded.len(), failed = report.failed.len(), dir = %config.plugins_dir.display(), "plugins scanned");

        let (db, licensing) = open_licensing(&config, plugins.clone()).await?;
        // Changes other hosts make on the same database reach this index too.
        licensing.follow_changes();
        let licensed = Licensed {
            licensing: licensing.clone(),
            plugins: plugins.clone(),
        };
        // Connector state lives in the database: shared by every host,
        // kept across restarts.
        let kv = crate::plugins::kv::DbKv::open(db.clone()).await?;
        kv.spawn_sweeper();
        let bridge = Arc::new(HostBridge::new(licensed.clone(), kv));
        plugins.set_services(bridge.clone());
        let me = host_id(&config.data_dir)?;
        let outbox = Outbox::open(db.clone()).await?.with_host(&me);
        let pipeline = Pipeline::start(
            outbox,
            plugins.clone(),
            Arc::new(licensed.clone()),
            Settings {
                max_attempts: config.delivery.max_attempts,
                base_backoff: Duration::from_millis(config.delivery.base_backoff_ms),
                max_backoff: Duration::from_secs(config.delivery.max_backoff_secs),
                lease: Duration::from_secs(config.delivery.lease_secs),
                ..Settings::default()
            },
        )
        .await?;

        bridge.set_pipeline(pipeline.clone());
        let (host_provider, sim): (Arc<dyn Provider>, Option<Arc<SimProvider>>) =
            match config.telephony.provider.as_str() {
                "sim" => {
                    let sim = Arc::new(SimProvider::new(pipeline.events()));
                    (sim.clone(), Some(sim))
                }
                "sip" => (
                    Arc::new(
                        crate::telephony::sip::SipProvider::start(
                            config.telephony.sip.clone(),
                            pipeline.events(),
                        )
                        .await?,
                    ),
                    None,
                ),
                _ => (
                    crate::telephony::build(&config.telephony, pipeline.events())?,
                    None,
                ),
            };
        let allowed =
            crate::egress::networks("telephony.allow_networks", &config.telephony.allow_networks)
                .map_err(anyhow::Error::msg)?;
        let telephony =
            Arc::new(TelephonyHub::new(host_provider, pipeline.events()).allowing(allowed));
        // Connections follow the telephony accounts, monitoring follows the
        // licenses, both at run time.
        if db.backend == crate::store::Backend::Postgres {
            telephony.share_ownership(&me);
        }
        let mut lines = licensing.telephony_lines();
        telephony.set_lines(lines.borrow_and_update().clone()).await;
        {
            let telephony = telephony.clone();
            tokio::spawn(async move {
                while lines.changed().await.is_ok() {
                    let current = lines.borrow_and_update().clone();
                    telephony.set_lines(current).await;
                }
            });
        }
        // Several hosts on PostgreSQL: each SIP connection runs in full on
        // one of them at a time.
        let ownership = crate::telephony::ownership::Ownership::open(
            &db,
            &me,
            Duration::from_secs(config.telephony.lease_secs),
        )
        .await?;
        if ownership.is_shared() {
            tokio::spawn(keep_telephony_leases(
                ownership.clone(),
                telephony.clone(),
                licensing.telephony_lines(),
                config.telephony.provider == "sip",
            ));
        }
        let mut monitored = licensing.monitored_numbers();
        telephony.set_monitored(monitored.borrow_and_update().clone());
        {
            let telephony = telephony.clone();
            tokio::spawn(async move {
                while monitored.changed().await.is_ok() {
                    let set = monitored.borrow_and_update().clone();
                    tracing::debug!(numbers = set.len(), "monitored numbers changed");
                    telephony.set_monitored(set);
                }
            });
        }
        let shared = crate::store::shared::Shared::open(&db).await?;
        let dialer = Arc::new(ClickToCall::with_limiter(
            crate::dialing::Limiter::with_state(config.dialing.clone(), shared.clone()),
            Arc::new(licensed.clone()),
            Arc::new(Telephony(telephony.clone())),
        ));
        bridge.set_dialer(dialer.clone());
        pipeline.spawn_retention(config.retention_days);
        Ok(App(Arc::new(AppInner {
            config,
            plugins,
            db,
            licensing,
            pipeline,
            telephony,
            sim,
            dialer,
            licensed,
            shared,
            ownership,
        })))
    }

    /// The HTTP router with every surface.
    pub fn router(&self) -> Router {
        let operator = |r: Router| {
            r.route_layer(axum::middleware::from_fn_with_state(
                self.licensing.clone(),
                api::auth::require_operator,
            ))
        };
        let mut router = Router::new()
            .merge(api::health::router())
            .merge(api::plugins::router())
            .with_state(self.clone())
            .merge(api::admin::router(api::admin::AdminApi {
                licensing: self.licensing.clone(),
                pipeline: self.pipeline.clone(),
                telephony: self.telephony.clone(),
            }))
            .merge(api::business::router(api::business::BusinessApi {
                pipeline: self.pipeline.clone(),
                keys: Arc::new(self.licensed.clone()),
                dialer: self.dialer.clone(),
                routing: Arc::new(self.licensed.clone()),
                plugins: self.plugins.clone(),
                webhook_limits: Default::default(),
            }))
            .merge(api::widget::router())
            .merge(crate::portal::router(crate::portal::PortalState::new(
                self.clone(),
            )))
            .merge(operator(api::flow::operator_router(self.pipeline.clone())))
            .merge(operator(
                api::plugins::operator_router().with_state(self.clone()),
            ))
            .merge(api::flow::metrics_router(self.pipeline.clone()));
        let telephony = self.telephony.clone();
        router = router.merge(operator(Router::new().route(
            "/api/v1/telephony",
            axum::routing::get(move || {
                let t = telephony.clone();
                async move {
                    let (host_id, owners) = t.owners();
                    axum::Json(crate::telephony::hub::HostStatus {
                        host: t.status(),
                        accounts: t.account_statuses(),
                        host_id,
                        owners,
                    })
                }
            }),
        )));
        if let Some(sim) = &self.sim {
            router = router.merge(operator(crate::telephony::sim::router(sim.clone())));
        }
        router
    }

    /// Reasons the host cannot do its job right now (empty when ready).
    pub async fn readiness_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = sqlx::query("SELECT 1").execute(&self.db.pool).await {
            out.push(format!("database: {e}"));
        }
        let t = self.telephony.status();
        if !t.connected {
            out.push(format!(
                "telephony ({}): {}",
                t.kind,
                t.last_error.unwrap_or_else(|| "not connected".into())
            ));
        }
        out
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

/// Runs the host until SIGTERM or Ctrl-C, then drains deliveries.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let app = App::build(config).await?;
    let _watch = app.watch_plugins()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another leansync running? set `listen` or LEANSYNC_LISTEN"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    if !app.licensing.has_operator().await.unwrap_or(true) {
        tracing::warn!(
            "no operator account yet: run `leansync admin bootstrap --email you@example.ch` to create one"
        );
    }
    let deadline = Duration::from_secs(app.config.drain_timeout_secs);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let server = axum::serve(
        listener,
        app.router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            stopping.notify_one();
        }
    });
    // Open event streams never end by themselves: after the signal, give
    // connections the drain deadline, then stop regardless.
    tokio::select! {
        r = server => r?,
        _ = async { stopping.notified().await; tokio::time::sleep(deadline).await } => {
            tracing::info!("closing remaining connections (event streams)");
        }
    }
    let left = app.pipeline.drain(deadline).await;
    // What is still pending goes to the other hosts at once (on one host:
    // to the next start).
    match app.pipeline.release().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deliveries = n,
            "handed pending deliveries to the other hosts"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not release delivery leases; other hosts take them over when they expire")
        }
    }
    // Hand the SIP connections to the other hosts, then unregister from
    // the PBX, so it stops sending to a host that is gone.
    if let Err(e) = app.ownership.release().await {
        tracing::warn!(error = %e, "could not release the SIP connection leases; other hosts take them over when they expire");
    }
    app.telephony.shutdown().await;
    if left > 0 {
        tracing::warn!(
            left,
            "stopped with deliveries still running; they are retried on the next start"
        );
    }
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
