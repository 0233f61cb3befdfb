//! Per-call store state: what one plugin invocation may see and do.
//!
//! Each invocation gets a fresh store: no files, no environment, no sockets;
//! outbound HTTP only through the policy hook; stderr captured to explain
//! panics; memory capped by the limiter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::capabilities::OutboundPolicy;
use crate::call::CallEvent;

/// One installation of a connector: whose config and grants a call runs with.
#[derive(Debug, Clone, Default)]
pub struct Installation {
    /// Installation id (stable, shown to the plugin).
    pub id: String,
    /// Owning customer.
    pub customer_id: String,
    /// Plugin (connector) name.
    pub plugin: String,
    /// Non-secret configuration (a JSON object).
    pub config: serde_json::Value,
    /// Secret configuration fields by name.
    pub secrets: HashMap<String, String>,
    /// Outbound hosts the admin granted.
    pub granted_hosts: Vec<super::capabilities::HostPattern>,
    /// Non-public address ranges the operator lets this installation reach
    /// beyond `plugins.allow_networks` (the app in a customer's VPN).
    pub allow_networks: Vec<ipnet::IpNet>,
}

/// Services a plugin reaches through the `host` import, provided by the rest
/// of the host (store, telephony, live stream). Scoped per installation.
pub trait HostServices: Send + Sync + 'static {
    /// Reads a key-value entry of an installation.
    fn kv_get(&self, installation: &str, key: &str) -> BoxFuture<'static, Option<Vec<u8>>>;
    /// Writes a key-value entry; `Err` explains a refused write.
    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// Deletes a key-value entry.
    fn kv_delete(&self, installation: &str, key: &str) -> BoxFuture<'static, ()>;
    /// Places a click-to-call on behalf of an installation.
    fn place_call(
        &self,
        installation: &Installation,
        from: String,
        to: String,
    ) -> BoxFuture<'static, Result<String, String>>;
    /// Shows a call on the installation's live screens.
    fn push_to_screen(&self, installation: &Installation, event: CallEvent);
    /// Sees every line a guest logs (the host already writes it to its log).
    fn guest_log(&self, _installation: &Installation, _level: &'static str, _message: &str) {}
    /// A tap that sees (and may answer) every outbound request; only the
    /// development harness has one.
    fn http_tap(&self) -> Option<Arc<dyn HttpTap>> {
        None
    }
}

/// One outbound request a guest made, as the development harness shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The request body as text (lossy).
    pub body: String,
    /// Response status, or why there was none (denied, refused, timed out).
    pub status: Option<u16>,
    /// Why the request got no response.
    pub error: Option<String>,
    /// Answered by a declared fake response rather than the network.
    pub faked: bool,
    /// Time until the response headers, milliseconds.
    pub elapsed_ms: f64,
}

/// A canned answer to an outbound request.
#[derive(Debug, Clone, Default)]
pub struct CannedResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// Sees a guest's outbound requests after the policy check.
pub trait HttpTap: Send + Sync {
    /// A canned answer for this request, or `None` to send it for real.
    fn answer(&self, method: &str, url: &http::Uri) -> Option<CannedResponse>;
    /// Records a request and what became of it.
    fn record(&self, record: RequestRecord);
}

/// In-memory key-value store with TTLs, for one process that keeps nothing
/// (tests, running one export alone); the host keeps its state in the
/// database ([`super::kv::DbKv`]).
#[derive(Default)]
pub struct MemoryServices {
    kv: parking_lot::Mutex<HashMap<KvKey, KvEntry>>,
}

/// (installation, key).
type KvKey = (String, String);
/// Value and optional expiry.
type KvEntry = (Vec<u8>, Option<Instant>);

/// Largest value a plugin may store under one key.
pub const KV_MAX_VALUE: usize = 64 * 1024;
/// Longest key a plugin may use.
pub const KV_MAX_KEY: usize = 512;
/// Most keys one installation may hold.
pub const KV_MAX_KEYS: usize = 10_000;

impl MemoryServices {
    /// Reads an entry.
    pub fn get(&self, installation: &str, key: &str) -> Option<Vec<u8>> {
        let mut kv = self.kv.lock();
        let k = (installation.to_owned(), key.to_owned());
        match kv.get(&k) {
            Some((_, Some(exp))) if *exp <= Instant::now() => {
                kv.remove(&k);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    /// Writes an entry, within [`KV_MAX_VALUE`] and [`KV_MAX_KEYS`].
    pub fn set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> Result<(), String> {
        check_kv_write(key, &value)?;
        let mut kv = self.kv.lock();
        let k = (installation.to_owned(), key.to_owned());
        let mut count = kv.keys().filter(|(i, _)| i == installation).count();
        if count >= KV_MAX_KEYS && !kv.contains_key(&k) {
            // Expired entries are only dropped when read; a lookup cache
            // with a TTL per number would otherwise fill the quota for good.
            let now = Instant::now();
            kv.retain(|(i, _), (_, exp)| i != installation || exp.is_none_or(|e| e > now));
            count = kv.keys().filter(|(i, _)| i == installation).count();
        }
        if count >= KV_MAX_KEYS && !kv.contains_key(&k) {
            return Err(kv_quota_full());
        }
        let exp = ttl_secs.map(|s| Instant::now() + std::time::Duration::from_secs(s.into()));
        kv.insert(k, (value, exp));
        Ok(())
    }

    /// Live keys of an installation, sorted.
    pub fn keys(&self, installation: &str) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .kv
            .lock()
            .iter()
            .filter(|((i, _), (_, exp))| i == installation && exp.is_none_or(|e| e > now))
            .map(|((_, k), _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Deletes an entry.
    pub fn delete(&self, installation: &str, key: &str) {
        self.kv
            .lock()
            .remove(&(installation.to_owned(), key.to_owned()));
    }
}

/// Refuses a key or value over the limits, saying which and by how much.
pub fn check_kv_write(key: &str, value: &[u8]) -> Result<(), String> {
    if key.len() > KV_MAX_KEY {
        return Err(format!(
            "key '{}…' is {} bytes; the limit is {KV_MAX_KEY} bytes: hash long keys",
            key.chars().take(40).collect::<String>(),
            key.len()
        ));
    }
    if value.len() > KV_MAX_VALUE {
        return Err(format!(
            "value for key '{key}' is {} bytes; the limit is {KV_MAX_VALUE} bytes",
            value.len()
        ));
    }
    Ok(())
}

/// The message for an installation whose key quota is full.
pub fn kv_quota_full() -> String {
    format!("installation already holds {KV_MAX_KEYS} keys; delete some or set a ttl")
}

impl HostServices for MemoryServices {
    fn kv_get(&self, installation: &str, key: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.get(installation, key)))
    }

    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl_secs: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(std::future::ready(self.set(
            installation,
            key,
            value,
            ttl_secs,
        )))
    }

    fn kv_delete(&self, installation: &str, key: &str) -> BoxFuture<'static, ()> {
        self.delete(installation, key);
        Box::pin(std::future::ready(()))
    }

    fn place_call(
        &self,
        _: &Installation,
        _: String,
        _: String,
    ) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("click-to-call is not available in this host context".to_string()) })
    }

    fn push_to_screen(&self, _: &Installation, _: CallEvent) {}
}

/// What one invocation runs with.
pub struct CallScope {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Installation the call acts for.
    pub installation: Arc<Installation>,
    /// Whether the manifest asked for key-value state.
    pub key_value: bool,
    /// Whether the manifest asked for secrets.
    pub secrets: bool,
    /// Whether the manifest asked to place calls.
    pub place_calls: bool,
    /// Host services.
    pub services: Arc<dyn HostServices>,
    /// Live viewers of guest log lines.
    pub log_bus: tokio::sync::broadcast::Sender<super::runtime::GuestLog>,
}

/// `T` of every plugin `Store<T>`.
pub struct StoreState {
    pub(super) scope: CallScope,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpPolicyHooks,
    pub(super) limiter: MemoryLimiter,
    pub(super) stderr: MemoryOutputPipe,
    /// Set by the epoch callback when the deadline passed.
    pub(super) timed_out: bool,
}

impl StoreState {
    /// Fresh sandbox state for one invocation.
    pub fn new(
        scope: CallScope,
        requested: Vec<super::capabilities::HostPattern>,
        memory_cap: usize,
        outbound: super::outbound::Outbound,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(8 * 1024);
        let mut b = WasiCtx::builder();
        b.stderr(stderr.clone());
        let policy = OutboundPolicy {
            plugin: scope.plugin.to_string(),
            requested,
            granted: scope.installation.granted_hosts.clone(),
        };
        let tap = scope.services.http_tap();
        Self {
            scope,
            wasi: b.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: HttpPolicyHooks {
                policy,
                outbound,
                tap,
            },
            limiter: MemoryLimiter {
                cap: memory_cap,
                hit: false,
            },
            stderr,
            timed_out: false,
        }
    }

    /// Hands a state made ahead of time (for a warm instance) to the call it
    /// now serves: the installation, its grants and the host services.
    pub fn bind(&mut self, scope: CallScope, outbound: super::outbound::Outbound) {
        self.hooks.policy.granted = scope.installation.granted_hosts.clone();
        self.hooks.outbound = outbound;
        self.hooks.tap = scope.services.http_tap();
        self.scope = scope;
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Most of a denied request's body read (and dropped) before it fails.
const DENIED_BODY_DRAIN: usize = 1 << 20;

/// Checks every outbound request against the installation's policy.
struct HttpPolicyHooks {
    policy: OutboundPolicy,
    outbound: super::outbound::Outbound,
    tap: Option<Arc<dyn HttpTap>>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicyHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if let Err(msg) = self.policy.check(&host, port) {
            tracing::warn!(plugin = %self.policy.plugin, "{msg}");
            if let Some(tap) = &self.tap {
                tap.record(RequestRecord {
                    method: request.method().to_string(),
                    url: uri.to_string(),
                    headers: header_pairs(request.headers()),
                    body: String::new(),
                    status: None,
                    error: Some(msg.clone()),
                    faked: false,
                    elapsed_ms: 0.0,
                });
            }
            // Read what the guest is writing before failing: a guest whose
            // body is still being streamed (componentize-js's fetch) traps
            // instead of seeing the error when the body is dropped unread.
            let body = request.into_body();
            return Box::new(async move {
                use http_body_util::BodyExt;
                let drain = http_body_util::Limited::new(body, DENIED_BODY_DRAIN).collect();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                Err(wasmtime_wasi_http::Error::InternalError(Some(msg)))
            });
        }
        let outbound = self.outbound.clone();
        let tap = self.tap.clone();
        Box::new(async move {
            let res = match tap {
                None => super::outbound::send(&outbound, request, options).await?,
                Some(tap) => tapped(&*tap, &outbound, request, options).await?,
            };
            Ok((
                res,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn full_body(bytes: bytes::Bytes) -> wasmtime_wasi_http::WasiBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Sends (or answers from the tap) a request of the development harness,
/// recording it with its body and outcome.
async fn tapped(
    tap: &dyn HttpTap,
    outbound: &super::outbound::Outbound,
    request: http::Request<wasmtime_wasi_http::WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
) -> wasmtime_wasi_http::Result<http::Response<wasmtime_wasi_http::WasiBody>> {
    use http_body_util::BodyExt;
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut record = RequestRecord {
        method: parts.method.to_string(),
        url: parts.uri.to_string(),
        headers: header_pairs(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: None,
        error: None,
        faked: false,
        elapsed_ms: 0.0,
    };
    if let Some(canned) = tap.answer(parts.method.as_str(), &parts.uri) {
        let mut res = http::Response::builder().status(canned.status);
        for (k, v) in &canned.headers {
            res = res.header(k, v);
        }
        let res = res
            .body(full_body(canned.body.into()))
            .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
        record.status = Some(canned.status);
        record.faked = true;
        record.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        tap.record(record);
        return Ok(res);
    }
    let request = http::Request::from_parts(parts, full_body(bytes));
    let result = super::outbound::send(outbound, request, options).await;
    record.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(res) => record.status = Some(res.status().as_u16()),
        Err(e) => record.error = Some(e.to_string()),
    }
    tap.record(record);
    result
}

/// Caps linear memory and remembers whether the cap was hit.
pub struct MemoryLimiter {
    cap: usize,
    pub(super) hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_do_not_count_against_the_key_quota() {
        let kv = MemoryServices::default();
        for i in 0..KV_MAX_KEYS {
            kv.set("inst", &format!("k{i}"), vec![1], Some(0)).unwrap();
        }
        assert_eq!(kv.get("inst", "k0"), None, "a zero TTL expires at once");
        kv.set("inst", "fresh", vec![2], Some(60)).unwrap();
        assert_eq!(kv.get("inst", "fresh"), Some(vec![2]));
    }

    #[test]
    fn live_entries_still_fill_the_quota() {
        let kv = MemoryServices::default();
        for i in 0..KV_MAX_KEYS {
            kv.set("inst", &format!("k{i}"), vec![1], None).unwrap();
        }
        let err = kv.set("inst", "one-more", vec![1], None).unwrap_err();
        assert!(err.contains("delete some or set a ttl"), "{err}");
        kv.set("other", "k", vec![1], None).unwrap();
    }
}
