//! Loading, versioning, invoking and health of connector plugins.

use super::egress::Egress;
use super::outbound::Outbound;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use semver::Version;
use serde::Serialize;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use super::api::{self, Bindings, Instance, Reply, Request};
use super::engine::{ArtifactCache, EpochTicker, Origin, build_engine};
use super::manifest::{Capabilities, MANIFEST_FILE, Manifest};
use super::sandbox::{CallScope, HostServices, Installation, MemoryServices, StoreState};
use crate::call::{CallEvent, Contact};
use crate::config::PluginLimits;

/// How long a degraded installation is left alone before one trial call.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A healthy installation not called for this long no longer counts towards
/// the plugin-wide status.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Delivery metadata handed to `on-call-event`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable across retries of one (event, installation) delivery.
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// One problem with an installation's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// JSON pointer of the field.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// An inbound webhook request for a plugin.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// HTTP method.
    pub method: String,
    /// Path below `/api/v1/apps/{installation}`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

/// A plugin's answer to a webhook request.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// Why an invocation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// No plugin of that name is loaded.
    #[error("plugin '{0}' is not loaded; check `leansync plugin list` and the plugins directory")]
    NotLoaded(String),
    /// The connector asked to be retried.
    #[error("retryable: {message}")]
    Retryable {
        /// The connector's explanation.
        message: String,
        /// Earliest retry, if the connector said.
        retry_after_ms: Option<u64>,
    },
    /// The connector said retrying will not help.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The plugin trapped, panicked, ran out of memory or time.
    #[error("plugin fault: {0}")]
    Fault(String),
    /// The plugin is degraded for this installation and this call was not
    /// attempted.
    #[error(
        "plugin '{plugin}' is degraded for installation {installation} after repeated faults (last: {last_error}); calls resume after a successful trial (one every 5 s) or a reload"
    )]
    Degraded {
        /// Plugin name.
        plugin: String,
        /// The installation whose calls fault.
        installation: String,
        /// The fault that degraded it.
        last_error: String,
    },
}

impl InvokeError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, InvokeError::Permanent(_))
    }

    /// Minimum wait the connector asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InvokeError::Retryable {
                retry_after_ms: Some(ms),
                ..
            } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }
}

/// Health of a plugin as shown to admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving normally.
    Active,
    /// Repeated faults; see `last_error`.
    Degraded,
    /// Could not be loaded; see `last_error`.
    Failed,
}

/// What the API and CLI show about a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version (absent when it never loaded).
    pub version: Option<String>,
    /// Connector API version it is bound to.
    pub api_version: Option<String>,
    /// Current health.
    pub status: Status,
    /// Last fault or load problem.
    pub last_error: Option<String>,
    /// One-line description.
    pub description: String,
    /// Capabilities the manifest asks for.
    pub capabilities: Option<Capabilities>,
    /// Whether it implements contact lookup.
    pub lookup: bool,
    /// Whether the component came from the compile cache.
    pub origin: Option<Origin>,
    /// SHA-256 of the component.
    pub digest: Option<String>,
    /// Invocations and faults since load.
    pub calls: u64,
    /// Faults since load.
    pub faults: u64,
    /// Instances made ahead of time and ready for a call.
    pub warm: usize,
}

/// A plugin ready to serve: validated manifest and pre-instantiated component.
pub struct LoadedPlugin {
    /// The manifest.
    pub manifest: Manifest,
    /// Folder it was loaded from.
    pub dir: PathBuf,
    /// The connector API version it is bound to.
    pub api_version: Version,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// Compiled now or loaded from the cache.
    pub origin: Origin,
    bindings: Bindings,
    fingerprint: Fingerprint,
    health: Health,
    /// Instances made ahead of time, each waiting for exactly one call.
    warm: Mutex<Vec<Warm>>,
    /// A refill task is running.
    refilling: AtomicBool,
}

/// A fresh instance in its own store, instantiated off the call path. It is
/// bound to an installation only when taken and is never reused, so nothing
/// a guest keeps in memory crosses calls or installations.
struct Warm {
    store: Store<StoreState>,
    instance: Instance,
}

/// Health of a plugin: counters for the catalogue, and one circuit breaker
/// per installation, so one customer's unreachable app or bad config never
/// degrades the connector for the others.
#[derive(Default)]
struct Health {
    calls: AtomicU64,
    faults: AtomicU64,
    breakers: Mutex<std::collections::HashMap<String, Breaker>>,
}

/// The circuit breaker of one (plugin, installation).
struct Breaker {
    customer: String,
    consecutive: u32,
    last_error: Option<String>,
    last_probe: Option<Instant>,
    last_call: Instant,
}

impl Health {
    /// Whether most customers calling this plugin lately have an open
    /// breaker (then the plugin as a whole is shown degraded), with the
    /// last fault of an open breaker.
    fn plugin_wide(&self, degraded_after: u32) -> (bool, Option<String>) {
        let now = Instant::now();
        let mut b = self.breakers.lock();
        b.retain(|_, x| x.consecutive > 0 || now.duration_since(x.last_call) < FORGET_AFTER);
        let mut seen = std::collections::HashSet::new();
        let mut open = std::collections::HashSet::new();
        let mut last = None;
        for x in b.values() {
            seen.insert(x.customer.as_str());
            if x.consecutive >= degraded_after {
                open.insert(x.customer.as_str());
                last = last.or_else(|| x.last_error.clone());
            }
        }
        let degraded = !open.is_empty() && open.len() * 2 > seen.len();
        (degraded, last.filter(|_| degraded))
    }
}

type Fingerprint = Vec<(u64, Option<SystemTime>)>;

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: ArtifactCache,
    limits: PluginLimits,
    /// Where plugins may connect (the operator's rules).
    egress: Egress,
    /// Their HTTP client, which keeps to `egress`.
    outbound: Outbound,
    /// Clients for installations the operator allowed extra ranges, by
    /// those ranges (installations with the same ranges share one pool).
    widened: Mutex<std::collections::HashMap<Vec<ipnet::IpNet>, Outbound>>,
    services: RwLock<Arc<dyn HostServices>>,
    /// Loaded plugins by name; swapped whole so readers see one consistent set.
    plugins: RwLock<Arc<BTreeMap<String, Arc<LoadedPlugin>>>>,
    /// Load problems by plugin folder name.
    problems: RwLock<BTreeMap<String, String>>,
    /// Plugins loaded from a folder outside the plugins directory (dev
    /// installs), by name: directory reloads keep them.
    dev_dirs: RwLock<BTreeMap<String, PathBuf>>,
    /// Every line a guest logs, for live viewers (`/api/v1/plugins/{name}/logs`).
    log_bus: tokio::sync::broadcast::Sender<GuestLog>,
    _ticker: EpochTicker,
}

/// One line a guest logged, as live viewers see it.
#[derive(Debug, Clone, Serialize)]
pub struct GuestLog {
    /// Unix epoch milliseconds.
    pub at_ms: u64,
    /// Plugin name.
    pub plugin: String,
    /// Installation the call ran for.
    pub installation: String,
    /// Its customer.
    pub customer_id: String,
    /// `trace` to `error`.
    pub level: &'static str,
    /// The text (at most 4096 characters).
    pub message: String,
}

/// The connector runtime: one engine, all loaded plugins, and invocation.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

/// What a directory scan did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadReport {
    /// Plugins newly loaded or replaced.
    pub loaded: Vec<String>,
    /// Plugins removed because their folder disappeared.
    pub removed: Vec<String>,
    /// Folder name and problem for every folder that failed to load.
    pub failed: Vec<(String, String)>,
}

impl PluginRuntime {
    /// Creates a runtime; compiled components are cached under `cache_dir`.
    pub fn new(limits: PluginLimits, cache_dir: &Path) -> anyhow::Result<Self> {
        let egress = Egress::new(&limits.allow_networks).map_err(anyhow::Error::msg)?;
        let outbound = Outbound::new(&egress);
        let engine = build_engine(&limits)?;
        let mut linker = Linker::new(&engine);
        api::add_to_linker(&mut linker)?;
        let cache = ArtifactCache::new(&engine, cache_dir)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                limits,
                egress,
                outbound,
                widened: Mutex::default(),
                services: RwLock::new(Arc::new(MemoryServices::default())),
                plugins: RwLock::new(Arc::new(BTreeMap::new())),
                problems: RwLock::new(BTreeMap::new()),
                dev_dirs: RwLock::new(BTreeMap::new()),
                log_bus: tokio::sync::broadcast::channel(1024).0,
                _ticker: ticker,
            }),
        })
    }

    /// The operator's egress rules (e.g. to refuse the host's own listener).
    pub fn egress(&self) -> &Egress {
        &self.inner.egress
    }

    /// Replaces the host services plugins reach through their `host` import.
    pub fn set_services(&self, services: Arc<dyn HostServices>) {
        *self.inner.services.write() = services;
    }

    /// The engine, for benchmarks and tools.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads one plugin folder without registering it.
    pub fn load(&self, dir: &Path) -> Result<LoadedPlugin, String> {
        let manifest = Manifest::load(dir).map_err(|e| e.to_string())?;
        let fingerprint = fingerprint(dir, &manifest);
        let name = &manifest.name;
        if api::resolve(&manifest.api).is_none() {
            return Err(format!(
                "plugin '{name}' requires connector API `{}`, but this host supports {}; rebuild it against a supported leansync-plugin-api or change `api` in {MANIFEST_FILE}",
                manifest.api,
                api::supported_list()
            ));
        }
        let wasm_path = dir.join(&manifest.component);
        let wasm = std::fs::read(&wasm_path).map_err(|e| {
            format!(
                "plugin '{name}': cannot read component {} ({e}); build it with `cargo build --target wasm32-wasip2 --release` and copy the .wasm next to {MANIFEST_FILE} (scripts/build-plugins.sh does this for bundled plugins)",
                wasm_path.display()
            )
        })?;
        let (component, origin, digest) = self
            .inner
            .cache
            .load(&self.inner.engine, &wasm)
            .map_err(|e| {
                format!(
                    "plugin '{name}': {} is not a valid WebAssembly component ({e:#}); build it for the wasm32-wasip2 target",
                    wasm_path.display()
                )
            })?;
        let exported = api::exported_version(&component, &self.inner.engine).ok_or_else(|| {
            format!(
                "plugin '{name}': the component does not export `leansync:connector/connector`; implement the Connector trait and call `leansync_plugin_api::export!`"
            )
        })?;
        if !api::SUPPORTED.contains(&exported) {
            return Err(format!(
                "plugin '{name}': the component was built against connector API {exported}, but this host supports {}",
                api::supported_list()
            ));
        }
        if !manifest.api.matches(&exported) {
            return Err(format!(
                "plugin '{name}': {MANIFEST_FILE} says `api = \"{}\"` but the component exports connector API {exported}; make them agree",
                manifest.api
            ));
        }
        let bindings = self
            .bind(&component, &exported)
            .map_err(|e| format!("plugin '{name}': cannot link the component: {e:#}"))?;
        Ok(LoadedPlugin {
            manifest,
            dir: dir.to_owned(),
            api_version: exported,
            digest,
            origin,
            bindings,
            fingerprint,
            health: Health::default(),
            warm: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        })
    }

    /// Loads one plugin folder from any path and serves it beside the
    /// others (replacing a plugin of the same name): the development harness
    /// and dev installs.
    pub fn install(&self, dir: &Path) -> Result<Arc<LoadedPlugin>, String> {
        let p = Arc::new(self.load(dir)?);
        self.swap_in(&p);
        Ok(p)
    }

    /// [`Self::install`] from a folder outside the plugins directory, kept
    /// across directory reloads (and taking precedence over a plugins-dir
    /// folder of the same name) until this process ends. Calling it again
    /// reloads the folder.
    pub fn dev_install(&self, dir: &Path) -> Result<Arc<LoadedPlugin>, String> {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        // Registered before it is swapped in, so a directory reload running
        // meanwhile keeps it (it keeps the dev plugin it finds loaded).
        let p = Arc::new(self.load(&dir)?);
        let name = p.manifest.name.clone();
        self.inner
            .dev_dirs
            .write()
            .insert(name.clone(), dir.clone());
        self.swap_in(&p);
        tracing::info!(plugin = %name, dir = %dir.display(), version = %p.manifest.version, "plugin dev-installed");
        Ok(p)
    }

    /// Serves `p` beside the loaded plugins, replacing one of its name.
    fn swap_in(&self, p: &Arc<LoadedPlugin>) {
        {
            let mut plugins = self.inner.plugins.write();
            let mut next = (**plugins).clone();
            next.insert(p.manifest.name.clone(), p.clone());
            *plugins = Arc::new(next);
        }
        self.refill(p);
    }

    /// Receives every line any guest logs from now on.
    pub fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<GuestLog> {
        self.inner.log_bus.subscribe()
    }

    fn bind(&self, component: &Component, version: &Version) -> anyhow::Result<Bindings> {
        Bindings::new(&self.inner.linker, component, version)
    }

    /// Scans `dir` and atomically swaps in the result: unchanged plugins stay,
    /// changed ones are reloaded, removed ones dropped. A folder that fails to
    /// load keeps its previous version serving and is reported.
    pub fn reload_dir(&self, dir: &Path) -> ReloadReport {
        let mut report = ReloadReport::default();
        let current = self.inner.plugins.read().clone();
        let mut next: BTreeMap<String, Arc<LoadedPlugin>> = BTreeMap::new();
        let mut problems = BTreeMap::new();
        let mut folders: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(MANIFEST_FILE).is_file())
                .collect(),
            Err(e) => {
                let msg = format!("cannot read plugins directory {}: {e}", dir.display());
                tracing::error!("{msg}");
                report.failed.push((dir.display().to_string(), msg));
                Vec::new()
            }
        };
        folders.sort();
        for folder in folders {
            let folder_name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let previous = current.values().find(|p| p.dir == folder).cloned();
            if let Some(prev) = &previous
                && fingerprint(&folder, &prev.manifest) == prev.fingerprint
            {
                next.insert(prev.manifest.name.clone(), prev.clone());
                continue;
            }
            match self.load(&folder) {
                Ok(p) if next.contains_key(&p.manifest.name) => {
                    let msg = format!(
                        "plugin name '{}' in {} is already used by another folder; names must be unique",
                        p.manifest.name,
                        folder.display()
                    );
                    problems.insert(folder_name.clone(), msg.clone());
                    report.failed.push((folder_name, msg));
                }
                Ok(p) => {
                    tracing::info!(plugin = %p.manifest.name, version = %p.manifest.version, api = %p.api_version, origin = ?p.origin, "plugin loaded");
                    report.loaded.push(p.manifest.name.clone());
                    let p = Arc::new(p);
                    self.refill(&p);
                    next.insert(p.manifest.name.clone(), p);
                }
                Err(msg) => {
                    tracing::error!(folder = %folder.display(), "{msg}");
                    if let Some(prev) = previous {
                        tracing::warn!(plugin = %prev.manifest.name, version = %prev.manifest.version, "keeping the previous version serving");
                        next.insert(prev.manifest.name.clone(), prev);
                    }
                    problems.insert(folder_name.clone(), msg.clone());
                    report.failed.push((folder_name, msg));
                }
            }
        }
        let mut plugins = self.inner.plugins.write();
        // Dev installs live outside the directory and stay as installed,
        // including one made while this scan ran.
        for (name, dir) in self.inner.dev_dirs.read().iter() {
            if let Some(p) = plugins.get(name).filter(|p| &p.dir == dir) {
                next.insert(name.clone(), p.clone());
            }
        }
        for name in current.keys() {
            if !next.contains_key(name) {
                tracing::info!(plugin = %name, "plugin removed");
                report.removed.push(name.clone());
            }
        }
        *plugins = Arc::new(next);
        drop(plugins);
        *self.inner.problems.write() = problems;
        report
    }

    /// The loaded plugin of that name.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.inner.plugins.read().get(name).cloned()
    }

    /// Every loaded plugin and every folder that failed to load.
    pub fn list(&self) -> Vec<PluginInfo> {
        let plugins = self.inner.plugins.read().clone();
        let problems = self.inner.problems.read().clone();
        let mut out: Vec<PluginInfo> = plugins
            .values()
            .map(|p| {
                let folder = p.dir.file_name().map(|n| n.to_string_lossy().into_owned());
                let reload_problem = folder.and_then(|f| problems.get(&f).cloned());
                let (degraded, fault) = p.health.plugin_wide(self.inner.limits.degraded_after);
                PluginInfo {
                    name: p.manifest.name.clone(),
                    version: Some(p.manifest.version.to_string()),
                    api_version: Some(p.api_version.to_string()),
                    status: if degraded {
                        Status::Degraded
                    } else {
                        Status::Active
                    },
                    // A fault of one installation is its customer's business:
                    // the catalogue shows one only when the plugin as a whole
                    // is degraded.
                    last_error: reload_problem
                        .map(|m| format!("new version not loaded, previous one still serving: {m}"))
                        .or(fault),
                    description: p.manifest.description.clone(),
                    capabilities: Some(p.manifest.capabilities.clone()),
                    lookup: p.manifest.lookup,
                    origin: Some(p.origin),
                    digest: Some(p.digest.clone()),
                    calls: p.health.calls.load(Ordering::Relaxed),
                    faults: p.health.faults.load(Ordering::Relaxed),
                    warm: p.warm.lock().len(),
                }
            })
            .collect();
        for (folder, problem) in problems {
            if !plugins.values().any(|p| {
                p.dir
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == folder)
            }) {
                out.push(PluginInfo {
                    name: folder,
                    version: None,
                    api_version: None,
                    status: Status::Failed,
                    last_error: Some(problem),
                    description: String::new(),
                    capabilities: None,
                    lookup: false,
                    origin: None,
                    digest: None,
                    calls: 0,
                    faults: 0,
                    warm: 0,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Delivers one call event to an installation's plugin.
    pub async fn on_call_event(
        &self,
        installation: &Arc<Installation>,
        event: &CallEvent,
        contact: Option<&Contact>,
        delivery: &Delivery,
    ) -> Result<(), InvokeError> {
        let request = Request::Event {
            event: Box::new(event.clone()),
            installation: installation.id.clone(),
            contact: contact.cloned(),
            delivery: delivery.clone(),
        };
        match self.invoke(installation, request).await? {
            Reply::Event(r) => r,
            _ => unreachable!("reply matches request"),
        }
    }

    /// Asks an installation's plugin to resolve a number to a contact.
    pub async fn lookup_contact(
        &self,
        installation: &Arc<Installation>,
        number: &str,
    ) -> Result<Option<Contact>, InvokeError> {
        match self
            .invoke(installation, Request::Lookup(number.to_owned()))
            .await?
        {
            Reply::Lookup(r) => r.map(|c| {
                c.map(|mut c| {
                    if let Some(why) = c.drop_unsafe_link() {
                        tracing::warn!(installation = %installation.id, "{why}");
                    }
                    c
                })
            }),
            _ => unreachable!("reply matches request"),
        }
    }

    /// Forwards a webhook request to an installation's plugin.
    pub async fn handle_http(
        &self,
        installation: &Arc<Installation>,
        req: HttpRequest,
    ) -> Result<HttpResponse, InvokeError> {
        match self.invoke(installation, Request::Http(req)).await? {
            Reply::Http(r) => Ok(r),
            _ => unreachable!("reply matches request"),
        }
    }

    /// Validates an installation config: the manifest's JSON schema first,
    /// then the plugin's own `validate-config`.
    pub async fn validate_config(
        &self,
        plugin: &str,
        config: &serde_json::Value,
    ) -> Result<Vec<ConfigIssue>, InvokeError> {
        let loaded = self
            .get(plugin)
            .ok_or_else(|| InvokeError::NotLoaded(plugin.to_owned()))?;
        let validator = jsonschema::validator_for(&loaded.manifest.config_schema).map_err(|e| {
            InvokeError::Permanent(format!(
                "plugin '{plugin}' has an invalid config schema: {e}"
            ))
        })?;
        let issues: Vec<ConfigIssue> = validator
            .iter_errors(config)
            .map(|e| ConfigIssue {
                field: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if !issues.is_empty() {
            return Ok(issues);
        }
        let installation = Arc::new(Installation {
            id: "validate".into(),
            plugin: plugin.to_owned(),
            config: config.clone(),
            ..Default::default()
        });
        match self
            .invoke(&installation, Request::Validate(config.to_string()))
            .await?
        {
            Reply::Validate(Ok(())) => Ok(Vec::new()),
            Reply::Validate(Err(list)) => Ok(list),
            _ => unreachable!("reply matches request"),
        }
    }

    async fn invoke(
        &self,
        installation: &Arc<Installation>,
        request: Request,
    ) -> Result<Reply, InvokeError> {
        let plugin = self
            .get(&installation.plugin)
            .ok_or_else(|| InvokeError::NotLoaded(installation.plugin.clone()))?;
        self.admit(&plugin, installation)?;
        let limits = &self.inner.limits;
        let timeout = Duration::from_millis(limits.call_timeout_ms);
        let scope = self.scope(&plugin, installation.clone());
        let warm = plugin.warm.lock().pop();
        let (mut store, instance) = match warm {
            Some(mut w) => {
                let out = self.outbound_for(installation);
                w.store.data_mut().bind(scope, out);
                (w.store, Some(w.instance))
            }
            None => (self.new_store(&plugin, scope), None),
        };
        arm_deadline(&mut store, timeout);
        plugin.health.calls.fetch_add(1, Ordering::Relaxed);
        let outcome =
            tokio::time::timeout(timeout, plugin.bindings.call(&mut store, instance, request))
                .await;
        let result = match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(explain_fault(&e, store.data(), limits)),
            Err(_) => Err(format!(
                "exceeded its {} ms deadline while waiting on host I/O",
                limits.call_timeout_ms
            )),
        };
        // Refill once the call is done: instantiating beside a running call
        // slows it (both fight over the process's memory mappings).
        drop(store);
        self.refill(&plugin);
        let now = Instant::now();
        let mut breakers = plugin.health.breakers.lock();
        let b = breakers
            .entry(installation.id.clone())
            .or_insert_with(|| Breaker {
                customer: installation.customer_id.clone(),
                consecutive: 0,
                last_error: None,
                last_probe: None,
                last_call: now,
            });
        b.last_call = now;
        match result {
            Ok(reply) => {
                if b.consecutive >= limits.degraded_after {
                    tracing::info!(plugin = %plugin.manifest.name, installation = %installation.id, "plugin recovered for this installation");
                }
                b.consecutive = 0;
                b.last_error = None;
                Ok(reply)
            }
            Err(msg) => {
                b.consecutive += 1;
                let n = b.consecutive;
                plugin.health.faults.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = %plugin.manifest.name, installation = %installation.id, consecutive = n, "plugin fault: {msg}");
                if n >= limits.degraded_after {
                    // The breaker opens now; the next trial waits a full interval.
                    b.last_probe = Some(now);
                    if n == limits.degraded_after {
                        tracing::error!(plugin = %plugin.manifest.name, installation = %installation.id, "plugin degraded for this installation after {n} consecutive faults");
                    }
                }
                b.last_error = Some(msg.clone());
                Err(InvokeError::Fault(msg))
            }
        }
    }

    fn scope(&self, plugin: &LoadedPlugin, installation: Arc<Installation>) -> CallScope {
        CallScope {
            plugin: plugin.manifest.name.as_str().into(),
            installation,
            key_value: plugin.manifest.capabilities.key_value,
            secrets: plugin.manifest.capabilities.secrets,
            place_calls: plugin.manifest.capabilities.place_calls,
            services: self.inner.services.read().clone(),
            log_bus: self.inner.log_bus.clone(),
        }
    }

    /// The HTTP client for `installation`: the shared one, or one that also
    /// reaches the ranges an operator allowed for it.
    fn outbound_for(&self, installation: &Installation) -> Outbound {
        if installation.allow_networks.is_empty() {
            return self.inner.outbound.clone();
        }
        let mut key = installation.allow_networks.clone();
        key.sort();
        let mut w = self.inner.widened.lock();
        if w.len() > 1_000 {
            w.clear();
        }
        w.entry(key)
            .or_insert_with_key(|k| Outbound::new(&self.inner.egress.widened(k)))
            .clone()
    }

    /// A fresh sandboxed store for one call of `plugin`.
    fn new_store(&self, plugin: &LoadedPlugin, scope: CallScope) -> Store<StoreState> {
        let scope_installation = scope.installation.clone();
        let state = StoreState::new(
            scope,
            plugin.manifest.capabilities.outbound_hosts.clone(),
            (self.inner.limits.memory_limit_mib as usize) << 20,
            self.outbound_for(&scope_installation),
        );
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }

    /// Tops up the plugin's warm instances in the background (when running
    /// inside a tokio runtime), so the next calls skip instantiation. A
    /// component that fails to instantiate stops the refill; calls then
    /// instantiate inline and report the failure as usual.
    fn refill(&self, plugin: &Arc<LoadedPlugin>) {
        let target = self.inner.limits.warm_instances as usize;
        if target == 0
            || plugin.warm.lock().len() >= target
            || plugin.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            plugin.refilling.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        let plugin = plugin.clone();
        handle.spawn(async move {
            let timeout = Duration::from_millis(this.inner.limits.call_timeout_ms);
            while plugin.warm.lock().len() < target {
                let placeholder = this.scope(&plugin, Arc::new(Installation::default()));
                let mut store = this.new_store(&plugin, placeholder);
                arm_deadline(&mut store, timeout);
                let made = plugin.bindings.instantiate(&mut store).await;
                match made {
                    Ok(instance) => plugin.warm.lock().push(Warm { store, instance }),
                    Err(e) => {
                        tracing::debug!(plugin = %plugin.manifest.name, "warm instance not made: {e:#}");
                        break;
                    }
                }
            }
            plugin.refilling.store(false, Ordering::Release);
        });
    }

    /// Circuit breaker: an installation whose calls keep faulting gets one
    /// trial call per interval; other installations are not affected.
    fn admit(&self, plugin: &LoadedPlugin, installation: &Installation) -> Result<(), InvokeError> {
        let mut breakers = plugin.health.breakers.lock();
        let Some(b) = breakers.get_mut(&installation.id) else {
            return Ok(());
        };
        if b.consecutive < self.inner.limits.degraded_after {
            return Ok(());
        }
        let now = Instant::now();
        if b.last_probe
            .is_some_and(|t| now.duration_since(t) < PROBE_INTERVAL)
        {
            return Err(InvokeError::Degraded {
                plugin: plugin.manifest.name.clone(),
                installation: installation.id.clone(),
                last_error: b.last_error.clone().unwrap_or_default(),
            });
        }
        b.last_probe = Some(now);
        Ok(())
    }

    /// Health of one installation's plugin: `Degraded` with the last fault
    /// while its breaker is open, else `Active` (and its last fault, if the
    /// last call failed).
    pub fn installation_health(
        &self,
        plugin: &str,
        installation: &str,
    ) -> (Status, Option<String>) {
        let Some(p) = self.get(plugin) else {
            return (
                Status::Failed,
                Some(format!("plugin '{plugin}' is not loaded")),
            );
        };
        let b = p.health.breakers.lock();
        match b.get(installation) {
            Some(x) if x.consecutive >= self.inner.limits.degraded_after => {
                (Status::Degraded, x.last_error.clone())
            }
            Some(x) => (Status::Active, x.last_error.clone()),
            None => (Status::Active, None),
        }
    }
}

/// Stops the guest once `timeout` has passed (checked at every epoch tick).
fn arm_deadline(store: &mut Store<StoreState>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        if Instant::now() >= deadline {
            ctx.data_mut().timed_out = true;
            return Err(wasmtime::Error::msg("deadline exceeded"));
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Turns a trap into a sentence an admin can act on.
fn explain_fault(err: &wasmtime::Error, state: &StoreState, limits: &PluginLimits) -> String {
    let stderr = String::from_utf8_lossy(&state.stderr.contents())
        .trim()
        .to_string();
    if state.timed_out {
        return format!(
            "exceeded its {} ms deadline (it loops or computes too long) and was stopped",
            limits.call_timeout_ms
        );
    }
    if state.limiter.hit {
        return format!(
            "exceeded its memory limit of {} MiB and was stopped",
            limits.memory_limit_mib
        );
    }
    if let Some(pos) = stderr.find("panicked at") {
        let detail: Vec<&str> = stderr[pos..].lines().take(2).collect();
        return detail.join(" ");
    }
    let mut msg = format!("trapped: {}", err.root_cause());
    if !stderr.is_empty() {
        msg.push_str(&format!(
            " (stderr: {})",
            stderr.chars().take(500).collect::<String>()
        ));
    }
    msg
}

/// Sizes and modification times of the manifest and component: cheap change detection.
fn fingerprint(dir: &Path, manifest: &Manifest) -> Fingerprint {
    [dir.join(MANIFEST_FILE), dir.join(&manifest.component)]
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (0, None),
        })
        .collect()
}
