//! Running one connector alone — no database, PBX, licensing or host
//! set-up — in the same sandbox, deadline and memory limit as the host: the
//! author commands `leansync plugin new|build|event|call|test`.
//!
//! [`Harness`] loads one plugin folder from any path; [`Setup`] is what an
//! installation would give it (config, secrets, grants, key-value state,
//! optionally a fake business app); [`Outcome`] is everything the call did
//! (result, log lines, outbound requests, state after).

pub mod build;
pub mod cases;
pub mod scaffold;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::capabilities::HostPattern;
use super::runtime::{Delivery, HttpRequest, InvokeError, LoadedPlugin, PluginRuntime};
use super::sandbox::{
    CannedResponse, HostServices, HttpTap, Installation, MemoryServices, RequestRecord,
};
use crate::call::{CallEvent, CallState, Contact, Direction, now_ms};
use crate::config::PluginLimits;
use crate::number::E164;

/// Where the author commands keep compiled components between runs (a
/// Python or JavaScript component takes seconds to compile): the host's
/// `LEANSYNC_CACHE_DIR` when set, else `$XDG_CACHE_HOME/leansync` or
/// `~/.cache/leansync`, else a folder in the temp dir. Entries are keyed by
/// the engine's settings and the component's digest.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LEANSYNC_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("leansync");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache/leansync");
    }
    std::env::temp_dir().join(format!("leansync-cache-{}", std::process::id()))
}

/// Installation id the harness runs with.
pub const DEV_INSTALLATION: &str = "dev-installation";

/// A call event as an author writes it: the fields of the WIT `call-event`
/// record (`leansync plugin event` makes one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFile {
    /// Stable id of the call across its events.
    pub call_id: String,
    /// `inbound`, `outbound` or `internal`.
    pub direction: Direction,
    /// `ringing`, `answered`, `ended` or `missed`.
    pub state: CallState,
    /// Calling number (E.164), absent when withheld.
    #[serde(default)]
    pub caller: Option<String>,
    /// Called number (E.164).
    pub callee: String,
    /// The licensed number the event was observed on.
    pub licensed_number: String,
    /// Unix epoch milliseconds.
    pub started_at_ms: u64,
    /// When it was answered.
    #[serde(default)]
    pub answered_at_ms: Option<u64>,
    /// When it ended or was missed.
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
    /// Talk time for `ended`.
    #[serde(default)]
    pub duration_secs: Option<u32>,
    /// Who picked up (connector API 1.1.0), e.g. `sip:201@pbx.example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

impl EventFile {
    /// An event in `state` of a call from `from` to `to`; the licensed number
    /// is the callee for inbound calls, the caller otherwise.
    pub fn make(
        state: CallState,
        from: Option<&str>,
        to: &str,
        direction: Direction,
        duration_secs: Option<u32>,
    ) -> Result<Self, String> {
        let from = from
            .map(|f| E164::parse(f).map_err(|e| format!("--from {f}: {e}")))
            .transpose()?;
        let to = E164::parse(to).map_err(|e| format!("--to {to}: {e}"))?;
        let licensed = match direction {
            Direction::Inbound | Direction::Internal => to.clone(),
            Direction::Outbound => from
                .clone()
                .ok_or("an outbound call needs --from (the licensed number it is placed from)")?,
        };
        let now = now_ms();
        let talk = u64::from(duration_secs.unwrap_or(42));
        let started = now - 5_000 - talk * 1000;
        let (answered, ended, duration) = match state {
            CallState::Ringing => (None, None, None),
            CallState::Answered => (Some(started + 5_000), None, None),
            CallState::Ended => (Some(started + 5_000), Some(now), Some(talk as u32)),
            CallState::Missed => (None, Some(started + 20_000), None),
        };
        Ok(Self {
            call_id: format!("dev-{now}"),
            direction,
            state,
            caller: from.map(|n| n.to_string()),
            callee: to.to_string(),
            licensed_number: licensed.to_string(),
            started_at_ms: started,
            answered_at_ms: answered,
            ended_at_ms: ended,
            duration_secs: duration,
            answered_by: None,
        })
    }

    /// The domain event, checking every number.
    pub fn to_event(&self) -> Result<CallEvent, String> {
        let num = |field: &str, v: &str| {
            E164::parse(v).map_err(|e| format!("event field `{field}` = {v:?}: {e}"))
        };
        Ok(CallEvent {
            call_id: self.call_id.clone(),
            direction: self.direction,
            state: self.state,
            caller: self
                .caller
                .as_deref()
                .map(|c| num("caller", c))
                .transpose()?,
            callee: num("callee", &self.callee)?,
            monitored: num("licensed_number", &self.licensed_number)?,
            started_at_ms: self.started_at_ms,
            answered_at_ms: self.answered_at_ms,
            ended_at_ms: self.ended_at_ms,
            duration_secs: self.duration_secs,
            answered_by: self.answered_by.clone(),
        })
    }
}

/// One declared response of a fake business app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FakeRoute {
    /// Method to answer, or `*` for any.
    #[serde(default = "any_method")]
    pub method: String,
    /// Path to answer (`/contacts`); with a `?`, the query must match too.
    pub path: String,
    /// Status to answer with.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body as text.
    #[serde(default)]
    pub body: String,
    /// Response body as JSON (sets `content-type: application/json`).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
}

fn any_method() -> String {
    "*".into()
}

fn ok_status() -> u16 {
    200
}

impl FakeRoute {
    fn matches(&self, method: &str, uri: &http::Uri) -> bool {
        let method_ok = self.method == "*" || self.method.eq_ignore_ascii_case(method);
        let path_ok = if self.path.contains('?') {
            uri.path_and_query().map(|p| p.as_str()) == Some(self.path.as_str())
        } else {
            uri.path() == self.path
        };
        method_ok && path_ok
    }

    fn response(&self) -> CannedResponse {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = match &self.json {
            Some(v) => {
                headers.push(("content-type".into(), "application/json".into()));
                v.to_string().into_bytes()
            }
            None => self.body.clone().into_bytes(),
        };
        CannedResponse {
            status: self.status,
            headers,
            body,
        }
    }
}

/// What an installation gives the connector for one run.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Non-secret config (a JSON object).
    pub config: serde_json::Value,
    /// Secret config fields.
    pub secrets: HashMap<String, String>,
    /// Outbound hosts granted (as an admin would), e.g. `api.example.com`.
    pub grants: Vec<String>,
    /// Non-public ranges this installation may reach (`127.0.0.1/32`).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Key-value state before the call (values as text).
    pub kv: BTreeMap<String, String>,
    /// A fake business app: when set, every request is answered by it (a
    /// request no route matches gets a 404 naming the request) and nothing
    /// reaches the network.
    pub fake: Option<Vec<FakeRoute>>,
}

/// Which export to run, with its input.
#[derive(Debug, Clone)]
pub enum Input {
    /// `on-call-event`.
    Event(Box<EventFile>),
    /// `lookup-contact`.
    Lookup(String),
    /// `validate-config` on the setup's config.
    Validate,
    /// `handle-http`.
    Http(HttpRequest),
}

/// The export's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase", tag = "result")]
pub enum Verdict {
    /// It succeeded; `value` is the contact, the config issues (empty) or
    /// the webhook response.
    Ok {
        /// What it returned, as JSON.
        value: serde_json::Value,
    },
    /// It asked to be retried.
    Retryable {
        /// Its message.
        message: String,
        /// Wait it asked for.
        retry_after_ms: Option<u64>,
    },
    /// It said retrying will not help.
    Permanent {
        /// Its message.
        message: String,
    },
    /// It trapped, panicked, ran out of memory or time.
    Fault {
        /// What happened and how to fix it.
        message: String,
    },
}

impl Verdict {
    /// `ok`, `retryable`, `permanent` or `fault`.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Ok { .. } => "ok",
            Verdict::Retryable { .. } => "retryable",
            Verdict::Permanent { .. } => "permanent",
            Verdict::Fault { .. } => "fault",
        }
    }

    fn from_error(e: InvokeError) -> Self {
        match e {
            InvokeError::Retryable {
                message,
                retry_after_ms,
            } => Verdict::Retryable {
                message,
                retry_after_ms,
            },
            InvokeError::Permanent(message) => Verdict::Permanent { message },
            other => Verdict::Fault {
                message: other.to_string(),
            },
        }
    }
}

/// One line a guest logged.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// `trace` to `error`.
    pub level: &'static str,
    /// The text.
    pub message: String,
}

/// Everything one run did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The export's answer.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Wall time of the call, milliseconds.
    pub elapsed_ms: f64,
    /// Lines the guest logged, in order.
    pub log: Vec<LogLine>,
    /// Outbound requests, in order, with what became of each.
    pub requests: Vec<RequestRecord>,
    /// Key-value state after the call (values as text).
    pub kv: BTreeMap<String, String>,
    /// Click-to-calls the guest placed (from, to).
    pub placed_calls: Vec<(String, String)>,
    /// Calls it pushed to screens.
    pub screens: Vec<CallEvent>,
}

/// Records what a guest does through its `host` import and its HTTP.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<LogLine>>,
    requests: Mutex<Vec<RequestRecord>>,
    placed: Mutex<Vec<(String, String)>>,
    screens: Mutex<Vec<CallEvent>>,
    fake: Option<Vec<FakeRoute>>,
}

impl HttpTap for Recorder {
    fn answer(&self, method: &str, uri: &http::Uri) -> Option<CannedResponse> {
        let routes = self.fake.as_ref()?;
        Some(match routes.iter().find(|r| r.matches(method, uri)) {
            Some(r) => r.response(),
            None => CannedResponse {
                status: 404,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: format!(
                    "the fake app has no response for {method} {}; declare one under [[responses]]",
                    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                )
                .into_bytes(),
            },
        })
    }

    fn record(&self, record: RequestRecord) {
        self.requests.lock().push(record);
    }
}

/// Host services of the harness: in-memory state plus the recorder.
struct DevServices {
    kv: MemoryServices,
    rec: Arc<Recorder>,
}

impl HostServices for DevServices {
    fn kv_get(&self, installation: &str, key: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        self.kv.kv_get(installation, key)
    }

    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.kv.kv_set(installation, key, value, ttl_secs)
    }

    fn kv_delete(&self, installation: &str, key: &str) -> BoxFuture<'static, ()> {
        self.kv.kv_delete(installation, key)
    }

    fn place_call(
        &self,
        _: &Installation,
        from: String,
        to: String,
    ) -> BoxFuture<'static, Result<String, String>> {
        let n = {
            let mut p = self.rec.placed.lock();
            p.push((from, to));
            p.len()
        };
        Box::pin(async move { Ok(format!("dev-call-{n}")) })
    }

    fn push_to_screen(&self, _: &Installation, event: CallEvent) {
        self.rec.screens.lock().push(event);
    }

    fn guest_log(&self, _: &Installation, level: &'static str, message: &str) {
        self.rec.log.lock().push(LogLine {
            level,
            message: message.to_owned(),
        });
    }

    fn http_tap(&self) -> Option<Arc<dyn HttpTap>> {
        Some(self.rec.clone())
    }
}

/// One plugin folder loaded alone in a real sandbox.
pub struct Harness {
    runtime: PluginRuntime,
    plugin: Arc<LoadedPlugin>,
}

impl Harness {
    /// Loads `dir` (manifest and component) with the host's `limits`.
    pub fn open(dir: &Path, limits: PluginLimits) -> Result<Self, String> {
        let cache = cache_dir();
        std::fs::create_dir_all(&cache)
            .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
        let mut limits = limits;
        // The harness makes one fresh instance per call, as a cold host does.
        limits.warm_instances = 0;
        let runtime = PluginRuntime::new(limits, &cache).map_err(|e| format!("{e:#}"))?;
        let plugin = runtime.install(dir)?;
        Ok(Self { runtime, plugin })
    }

    /// The loaded plugin.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// Runs one export with `setup`.
    pub async fn run(&self, setup: &Setup, input: Input) -> Result<Outcome, String> {
        let rec = Arc::new(Recorder {
            fake: setup.fake.clone(),
            ..Default::default()
        });
        let services = Arc::new(DevServices {
            kv: MemoryServices::default(),
            rec: rec.clone(),
        });
        for (k, v) in &setup.kv {
            services
                .kv
                .set(DEV_INSTALLATION, k, v.clone().into_bytes(), None)
                .map_err(|e| format!("key-value state in: {e}"))?;
        }
        self.runtime.set_services(services.clone());
        let mut granted = Vec::new();
        for g in &setup.grants {
            granted.push(HostPattern::parse(g).map_err(|e| format!("grant {g:?}: {e}"))?);
        }
        let installation = Arc::new(Installation {
            id: DEV_INSTALLATION.into(),
            customer_id: "dev".into(),
            plugin: self.plugin.manifest.name.clone(),
            config: setup.config.clone(),
            secrets: setup.secrets.clone(),
            granted_hosts: granted,
            allow_networks: setup.allow_networks.clone(),
        });
        let started = Instant::now();
        let verdict = match input {
            Input::Event(ev) => {
                let event = ev.to_event()?;
                let delivery = Delivery {
                    idempotency_key: format!("{}:{}", event.event_id(), DEV_INSTALLATION),
                    attempt: 1,
                };
                match self
                    .runtime
                    .on_call_event(&installation, &event, None, &delivery)
                    .await
                {
                    Ok(()) => Verdict::Ok {
                        value: serde_json::Value::Null,
                    },
                    Err(e) => Verdict::from_error(e),
                }
            }
            Input::Lookup(number) => {
                let number = E164::parse(&number)
                    .map_err(|e| format!("--number {number}: {e}"))?
                    .to_string();
                match self.runtime.lookup_contact(&installation, &number).await {
                    Ok(c) => Verdict::Ok {
                        value: contact_json(c.as_ref()),
                    },
                    Err(e) => Verdict::from_error(e),
                }
            }
            Input::Validate => match self
                .runtime
                .validate_config(&self.plugin.manifest.name, &setup.config)
                .await
            {
                Ok(issues) if issues.is_empty() => Verdict::Ok {
                    value: serde_json::json!([]),
                },
                Ok(issues) => Verdict::Permanent {
                    message: issues
                        .iter()
                        .map(|i| format!("{}: {}", i.field, i.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                },
                Err(e) => Verdict::from_error(e),
            },
            Input::Http(req) => match self.runtime.handle_http(&installation, req).await {
                Ok(res) => Verdict::Ok {
                    value: serde_json::json!({
                        "status": res.status,
                        "headers": res.headers,
                        "body": String::from_utf8_lossy(&res.body),
                    }),
                },
                Err(e) => Verdict::from_error(e),
            },
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let kv = {
            let mut out = BTreeMap::new();
            for key in services.kv.keys(DEV_INSTALLATION) {
                if let Some(v) = services.kv.get(DEV_INSTALLATION, &key) {
                    out.insert(key, String::from_utf8_lossy(&v).into_owned());
                }
            }
            out
        };
        Ok(Outcome {
            verdict,
            elapsed_ms,
            log: std::mem::take(&mut *rec.log.lock()),
            requests: std::mem::take(&mut *rec.requests.lock()),
            kv,
            placed_calls: std::mem::take(&mut *rec.placed.lock()),
            screens: std::mem::take(&mut *rec.screens.lock()),
        })
    }
}

fn contact_json(c: Option<&Contact>) -> serde_json::Value {
    match c {
        None => serde_json::Value::Null,
        Some(c) => serde_json::json!({
            "name": c.name,
            "organisation": c.organisation,
            "deep_link": c.deep_link,
            "source": c.source,
        }),
    }
}

/// Prints an outcome for a person: result, log, requests, state.
pub fn print_outcome(o: &Outcome) {
    match &o.verdict {
        Verdict::Ok { value } if value.is_null() => {
            println!("result: ok ({:.1} ms)", o.elapsed_ms)
        }
        Verdict::Ok { value } => println!("result: ok ({:.1} ms)\n  {value}", o.elapsed_ms),
        Verdict::Retryable {
            message,
            retry_after_ms,
        } => {
            let after = retry_after_ms
                .map(|ms| format!(", retry after {ms} ms"))
                .unwrap_or_default();
            println!(
                "result: retryable ({:.1} ms{after})\n  {message}",
                o.elapsed_ms
            )
        }
        Verdict::Permanent { message } => {
            println!("result: permanent ({:.1} ms)\n  {message}", o.elapsed_ms)
        }
        Verdict::Fault { message } => {
            println!("result: fault ({:.1} ms)\n  {message}", o.elapsed_ms)
        }
    }
    if !o.log.is_empty() {
        println!("log:");
        for l in &o.log {
            println!("  {:5} {}", l.level, l.message);
        }
    }
    if !o.requests.is_empty() {
        println!("requests:");
        for r in &o.requests {
            let what = match (r.status, &r.error) {
                (Some(s), _) if r.faked => format!("{s} (fake app)"),
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => format!("no response: {e}"),
                (None, None) => "no response".into(),
            };
            println!(
                "  {} {} -> {what} [{:.1} ms]",
                r.method, r.url, r.elapsed_ms
            );
        }
    }
    if !o.placed_calls.is_empty() {
        println!("placed calls:");
        for (from, to) in &o.placed_calls {
            println!("  {from} -> {to}");
        }
    }
    if !o.kv.is_empty() {
        println!("key-value state after the call:");
        for (k, v) in &o.kv {
            println!("  {k} = {v}");
        }
    }
}
