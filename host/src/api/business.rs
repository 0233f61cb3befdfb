//! The business-app API, authenticated by a LeanSync Key:
//! click-to-call, call status, the SSE event stream, and plugin webhooks.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use futures::stream::Stream;
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::number::E164;
use crate::pipeline::{Pipeline, Routing, StoredEvent};
use crate::plugins::{HttpRequest, PluginRuntime};

/// What a valid LeanSync Key grants: one license on one number.
#[derive(Debug, Clone)]
pub struct KeyScope {
    /// Key id (never the secret).
    pub key_id: String,
    /// License the key is assigned to.
    pub license_id: String,
    /// Customer owning it.
    pub customer_id: String,
    /// Installation (business application) of the license.
    pub installation_id: String,
    /// The licensed number.
    pub number: E164,
}

/// Resolves LeanSync Keys; only assigned, unrevoked, unblocked keys resolve.
pub trait KeyResolver: Send + Sync + 'static {
    /// The scope of `secret`, or `None`.
    fn resolve(&self, secret: &str) -> Option<KeyScope>;
    /// Since when (Unix ms) the key may see its number's calls: not before
    /// the key was made, nor before its customer owned the number, so a
    /// replay never shows an earlier owner's calls.
    fn visible_since(&self, scope: &KeyScope) -> BoxFuture<'static, Result<u64, ApiError>>;
    /// A ticket standing for `secret` until `expires_at_ms` (see
    /// `POST /api/v1/events/ticket`).
    fn seal_ticket(&self, secret: &str, expires_at_ms: u64) -> String;
    /// The key a ticket stands for and its expiry, if a host made it.
    fn open_ticket(&self, ticket: &str) -> Option<(String, u64)>;
}

/// How long an event-stream ticket opens streams.
const TICKET_TTL: Duration = Duration::from_secs(60);

/// Places click-to-calls after every policy check.
pub trait Dialer: Send + Sync + 'static {
    /// Rings the key's phone, then `to`; returns the call id.
    fn place(&self, scope: KeyScope, to: String) -> BoxFuture<'static, Result<String, ApiError>>;
}

/// Everything the business API needs.
#[derive(Clone)]
pub struct BusinessApi {
    /// The pipeline (stored events, live stream).
    pub pipeline: Pipeline,
    /// Key resolution.
    pub keys: Arc<dyn KeyResolver>,
    /// Click-to-call.
    pub dialer: Arc<dyn Dialer>,
    /// Installation lookup for webhook routes.
    pub routing: Arc<dyn Routing>,
    /// Plugins, for webhook routes.
    pub plugins: PluginRuntime,
    /// Request budget of each installation's webhook route.
    pub webhook_limits: WebhookLimits,
}

/// Largest webhook body forwarded to a plugin.
const WEBHOOK_BODY_LIMIT: usize = 1 << 20;

/// Webhook requests per second one installation may make its plugin serve
/// (each one runs the plugin), and the burst above that rate.
const WEBHOOK_RATE_PER_SEC: f64 = 20.0;
const WEBHOOK_BURST: f64 = 40.0;

/// A token bucket per installation for `/api/v1/apps/{installation}`: one
/// app (or someone guessing its URL) flooding its route is answered 429
/// without running the plugin, and never slows another installation's.
#[derive(Clone, Default)]
pub struct WebhookLimits(
    Arc<parking_lot::Mutex<std::collections::HashMap<String, crate::dialing::rate::Bucket>>>,
);

impl WebhookLimits {
    /// Takes one request from `installation`'s bucket; `Err(wait)` when it
    /// is empty.
    fn take(&self, installation: &str) -> Result<(), std::time::Duration> {
        use crate::dialing::rate::Bucket;
        let now = crate::call::now_ms() as i64;
        let per_minute = WEBHOOK_RATE_PER_SEC * 60.0;
        let mut m = self.0.lock();
        if m.len() > 100_000 {
            // Full buckets are the same as none.
            m.retain(|_, b| {
                b.refill(per_minute, WEBHOOK_BURST, now);
                b.tokens < WEBHOOK_BURST
            });
        }
        let b = m
            .entry(installation.to_owned())
            .or_insert_with(|| Bucket::full(WEBHOOK_BURST, now));
        match b.refill(per_minute, WEBHOOK_BURST, now) {
            Some(wait) => Err(wait),
            None => {
                b.tokens -= 1.0;
                Ok(())
            }
        }
    }
}

/// Business-app routes.
pub fn router(api: BusinessApi) -> Router {
    Router::new()
        .route("/api/v1/calls", post(place_call))
        .route("/api/v1/calls/{id}", get(call_status))
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/ticket", post(ticket))
        .route("/api/v1/apps/{installation}", any(webhook_root))
        .route("/api/v1/apps/{installation}/{*path}", any(webhook))
        .layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        // The widget runs inside business apps on other origins; it
        // authenticates with the key, never with cookies.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                ]),
        )
        .with_state(api)
}

#[derive(Deserialize, Default)]
struct KeyQuery {
    /// The key itself (kept for older integrations; prefer `ticket`, which
    /// keeps the key out of URLs and logs).
    key: Option<String>,
    /// A short-lived ticket from `POST /api/v1/events/ticket`.
    ticket: Option<String>,
    last_event_id: Option<i64>,
}

use crate::call::now_ms;

/// The key in `Authorization: Bearer <key>`, if the request sends one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The key a query's `ticket` stands for, if it is still valid.
fn redeem(api: &BusinessApi, ticket: &str) -> Result<String, ApiError> {
    match api.keys.open_ticket(ticket) {
        Some((secret, exp)) if exp > now_ms() => Ok(secret),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ticket_expired",
            format!(
                "this event-stream ticket has expired (tickets open a stream within {} s); get a new one with POST /api/v1/events/ticket and your key in the Authorization header",
                TICKET_TTL.as_secs()
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_ticket",
            "this event-stream ticket was not issued by this service (or was altered); get one with POST /api/v1/events/ticket",
        )),
    }
}

#[derive(Serialize)]
struct Ticket {
    ticket: String,
    expires_in_secs: u64,
    url: String,
}

/// `POST /api/v1/events/ticket`: a ticket that opens the key's event
/// stream for the next minute, for EventSource (which cannot send headers)
/// without putting the key in a URL.
async fn ticket(
    State(api): State<BusinessApi>,
    headers: HeaderMap,
) -> Result<Json<Ticket>, ApiError> {
    scope(&api, &headers, None)?;
    let secret = bearer(&headers).map(str::trim).unwrap_or_default();
    let t = api
        .keys
        .seal_ticket(secret, now_ms() + TICKET_TTL.as_millis() as u64);
    Ok(Json(Ticket {
        url: format!("/api/v1/events?ticket={t}"),
        ticket: t,
        expires_in_secs: TICKET_TTL.as_secs(),
    }))
}

fn scope(
    api: &BusinessApi,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<KeyScope, ApiError> {
    let from_header = bearer(headers);
    let Some(secret) = from_header.or(query_key) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "send the LeanSync Key as `Authorization: Bearer <key>` (or `?key=` for EventSource)",
        ));
    };
    api.keys.resolve(secret.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_key",
            "this LeanSync Key is unknown, revoked, unassigned or blocked; ask your admin for a valid key",
        )
    })
}

/// The caller's key scope from `Authorization: Bearer <key>`, read in place
/// (the `HeaderMap` extractor would copy every header of every request).
struct Authorized(KeyScope);

impl axum::extract::FromRequestParts<BusinessApi> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &BusinessApi,
    ) -> Result<Self, ApiError> {
        scope(api, &parts.headers, None).map(Self)
    }
}

#[derive(Deserialize)]
struct PlaceCall {
    to: String,
}

#[derive(Serialize)]
struct Placed {
    call_id: String,
    from: String,
    to: String,
}

async fn place_call(
    State(api): State<BusinessApi>,
    Authorized(scope): Authorized,
    body: Result<Json<PlaceCall>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Placed>), ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected JSON like {{\"to\": \"+41441234567\"}}: {e}"),
        )
    })?;
    let from = scope.number.to_string();
    let call_id = api.dialer.place(scope, body.to.clone()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Placed {
            call_id,
            from,
            to: body.to,
        }),
    ))
}

#[derive(Serialize)]
struct CallStatus {
    call_id: String,
    state: Option<String>,
    events: Vec<serde_json::Value>,
}

async fn call_status(
    State(api): State<BusinessApi>,
    Authorized(scope): Authorized,
    Path(id): Path<String>,
) -> Result<Json<CallStatus>, ApiError> {
    let events = api
        .pipeline
        .outbox()
        .call_events(&id)
        .await
        .map_err(ApiError::internal)?;
    let mine: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.event.monitored == scope.number)
        .collect();
    if mine.is_empty() {
        return Err(ApiError::not_found(format!(
            "no call '{id}' on {}; use the call_id returned by POST /api/v1/calls",
            scope.number
        )));
    }
    Ok(Json(CallStatus {
        call_id: id,
        state: mine.last().map(|e| e.event.state.as_str().to_string()),
        events: mine.iter().map(|e| event_json(e)).collect(),
    }))
}

/// The JSON every listener sees for one event.
pub fn event_json(e: &StoredEvent) -> serde_json::Value {
    let ev = &e.event;
    serde_json::json!({
        "seq": e.seq,
        "call_id": ev.call_id,
        "state": ev.state,
        "direction": ev.direction,
        "caller": ev.caller,
        "callee": ev.callee,
        "number": ev.monitored,
        "started_at_ms": ev.started_at_ms,
        "answered_at_ms": ev.answered_at_ms,
        "ended_at_ms": ev.ended_at_ms,
        "duration_secs": ev.duration_secs,
        "contact": e.contact,
    })
}

fn sse_event(e: &StoredEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event("call")
        .data(event_json(e).to_string())
}

/// A plugin's push-to-screen as an SSE `call` event: no id (it is not
/// stored, so a reconnect does not resume from it), `pushed: true`.
fn screen_event(p: &crate::pipeline::Screen) -> Event {
    let mut data = event_json(&StoredEvent {
        seq: 0,
        event: p.event.clone(),
        contact: None,
    });
    data["seq"] = serde_json::Value::Null;
    data["pushed"] = true.into();
    Event::default().event("call").data(data.to_string())
}

async fn events(
    State(api): State<BusinessApi>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let from_ticket = q.ticket.as_deref().map(|t| redeem(&api, t)).transpose()?;
    let query_key = from_ticket.clone().or(q.key.clone());
    let scope = scope(&api, &headers, query_key.as_deref())?;
    let secret = bearer(&headers)
        .map(str::to_owned)
        .or(query_key)
        .unwrap_or_default();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .or(q.last_event_id);
    // Subscribe before replaying so nothing falls between the two.
    let mut live = api.pipeline.subscribe();
    let mut screens = api.pipeline.screens();
    let since = api.keys.visible_since(&scope).await?;
    let visible = move |e: &StoredEvent| e.event.started_at_ms >= since;
    let mut replay = match last {
        Some(after) => api
            .pipeline
            .outbox()
            .events_after(scope.number.as_str(), after, 1000)
            .await
            .map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    replay.retain(visible);
    let stream = async_stream(move |tx| async move {
        let mut high = last.unwrap_or(0);
        // Several hosts store events: sequence numbers are unique but
        // may arrive out of order, and an event may arrive twice (replay
        // and live, or this host's and another host's announcement).
        let mut sent = Recent::default();
        for e in &replay {
            high = high.max(e.seq);
            sent.insert(e.seq);
            if tx.send(sse_event(e)).await.is_err() {
                return;
            }
        }
        let floor = last.unwrap_or(0);
        // Re-check the key often so a revoked key stops within a second.
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                msg = live.recv() => match msg {
                    Ok(e) if e.event.monitored == scope.number && e.seq > floor && visible(&e) && sent.insert(e.seq) => {
                        if api.keys.resolve(&secret).is_none() { return; }
                        high = high.max(e.seq);
                        if tx.send(sse_event(&e)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Catch up from the store rather than lose events.
                        if let Ok(missed) = api.pipeline.outbox().events_after(scope.number.as_str(), high, 1000).await {
                            for e in missed.into_iter().filter(visible) {
                                if !sent.insert(e.seq) { continue; }
                                high = high.max(e.seq);
                                if tx.send(sse_event(&e)).await.is_err() { return; }
                            }
                        }
                    }
                    Err(_) => return,
                },
                pushed = screens.recv() => match pushed {
                    // A plugin's push-to-screen: for the listeners of its
                    // installation on that number only.
                    Ok(p) if p.installation_id == scope.installation_id && p.event.monitored == scope.number => {
                        if api.keys.resolve(&secret).is_none() { return; }
                        if tx.send(screen_event(&p)).await.is_err() { return; }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                _ = check.tick() => {
                    if api.keys.resolve(&secret).is_none() { return; }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The sequence numbers a stream sent lately (the last 4,096), so an event
/// that arrives twice is sent once.
#[derive(Default)]
struct Recent {
    set: std::collections::HashSet<i64>,
    order: std::collections::VecDeque<i64>,
}

impl Recent {
    /// Whether `seq` is new (and remembers it).
    fn insert(&mut self, seq: i64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > 4096
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

async fn webhook_root(
    State(api): State<BusinessApi>,
    Path(installation): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(api, installation, String::new(), method, uri, headers, body).await
}

async fn webhook(
    State(api): State<BusinessApi>,
    Path((installation, path)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(api, installation, path, method, uri, headers, body).await
}

/// The headers of a plugin's webhook answer that reach the caller; others
/// (`Set-Cookie`, `Location`, CORS, ...) are dropped, as the answer is
/// served on the host's own origin.
const PLUGIN_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "etag",
    "last-modified",
    "retry-after",
    "content-language",
    "vary",
    "x-request-id",
];

/// A plugin's webhook answer as the host serves it: on the host's own
/// origin, so only [`PLUGIN_RESPONSE_HEADERS`] pass and nothing in it may
/// run there (no script, no frames, no sniffing).
fn plugin_answer(r: crate::plugins::HttpResponse) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY),
        r.body,
    )
        .into_response();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) && PLUGIN_RESPONSE_HEADERS.contains(&k.as_str())
        {
            resp.headers_mut().insert(k, v);
        }
    }
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn forward(
    api: BusinessApi,
    installation: String,
    path: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(target) = api.routing.installation(&installation) else {
        return ApiError::not_found(format!(
            "no active installation '{installation}'; check the id in the portal and that its license is active"
        ))
        .into_response();
    };
    if let Err(wait) = api.webhook_limits.take(&installation) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "installation '{installation}' receives more than {WEBHOOK_RATE_PER_SEC} webhook requests per second (bursts of {WEBHOOK_BURST}); slow down and retry after the Retry-After header"
            ),
        )
        .with_retry_after(wait.as_secs().max(1))
        .into_response();
    }
    let req = HttpRequest {
        method: method.to_string(),
        path: format!("/{path}"),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .filter(|(k, _)| {
                *k != axum::http::header::AUTHORIZATION && *k != axum::http::header::COOKIE
            })
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    match api.plugins.handle_http(&target.installation, req).await {
        Ok(r) => plugin_answer(r),
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_failed",
            format!("the installation's connector failed: {e}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_installation_has_its_own_webhook_budget() {
        let l = WebhookLimits::default();
        for i in 0..WEBHOOK_BURST as usize {
            assert!(l.take("inst-a").is_ok(), "request {i} of the burst");
        }
        let wait = l.take("inst-a").unwrap_err();
        assert!(wait <= std::time::Duration::from_millis(60), "{wait:?}");
        assert!(
            l.take("inst-b").is_ok(),
            "another installation is not affected"
        );
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert!(l.take("inst-a").is_ok(), "the bucket refills");
    }

    #[test]
    fn a_plugins_answer_cannot_set_cookies_redirect_or_run_script_on_the_hosts_origin() {
        let header = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let resp = plugin_answer(crate::plugins::HttpResponse {
            status: 200,
            headers: vec![
                header("Content-Type", "text/html"),
                header("Set-Cookie", "ls_session=attacker; Path=/portal"),
                header("Location", "https://evil.example/"),
                header("Access-Control-Allow-Origin", "*"),
                header("Content-Security-Policy", "default-src *"),
                header("X-Request-Id", "r-1"),
            ],
            body: b"<script>alert(1)</script>".to_vec(),
        });
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["x-request-id"], "r-1");
        for gone in ["set-cookie", "location", "access-control-allow-origin"] {
            assert!(!h.contains_key(gone), "{gone} passed");
        }
        assert_eq!(h["content-security-policy"], "sandbox; default-src 'none'");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
}
