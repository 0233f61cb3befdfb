//! The `sip` provider: watches the licensed numbers on a real PBX with the
//! dialog event package (RFC 4235) over rsipstack, and turns the NOTIFYs
//! into normalised call events.
//!
//! For every monitored number it keeps one subscription: `SUBSCRIBE
//! sip:<user>@<domain>` with `Event: dialog`, digest-authenticated (401 or
//! 407), refreshed at 80 % of the granted expiry, re-established with
//! exponential backoff (1 s → 60 s) after errors, 481 or timeouts, and
//! ended (`Expires: 0`) when the number loses its last license.
//! Click-to-call is third-party call control, RFC 3725 flow I ([`c2c`]).

mod c2c;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::{Credential, handle_client_authenticate};
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{self as rsip, Header, Method, SipMessage, StatusCode};
use rsipstack::transaction::endpoint::{EndpointInnerRef, EndpointOption};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{Transaction, make_tag};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::dialoginfo::{self, Tracker, Transition};
use super::{Originate, Provider, ProviderStatus, TelephonyError};
use crate::call::{CallEvent, CallState, Direction, now_ms};
use crate::number::E164;

/// Settings of the SIP connection (`[telephony.sip]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// PBX address requests are sent to, `host:port` (UDP).
    pub server: String,
    /// SIP domain and digest realm; empty means the server's host.
    pub domain: String,
    /// Watcher account on the PBX.
    pub username: String,
    /// Its password (prefer `LEANSYNC_SIP_PASSWORD`).
    pub password: String,
    /// Local address to bind, `127.0.0.1:0` for any free port.
    pub bind: String,
    /// Requested subscription lifetime, seconds.
    pub expires: u32,
    /// How a monitored number is written as a SIP user: `digits`
    /// (`41441234567`), `e164` (`+41441234567`) or `national` (`0441234567`).
    pub user_format: String,
    /// Click-to-call: how long the user's phone may ring, seconds.
    pub ring_timeout_secs: u32,
    /// Click-to-call: how long the destination may ring, seconds (keep it
    /// under 32: the phone's answer waits unacknowledged meanwhile).
    pub answer_timeout_secs: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:5060".into(),
            domain: String::new(),
            username: "leansync".into(),
            password: String::new(),
            bind: "0.0.0.0:0".into(),
            expires: 600,
            user_format: "digits".into(),
            ring_timeout_secs: 30,
            answer_timeout_secs: 25,
        }
    }
}

impl SipConfig {
    fn domain(&self) -> String {
        if self.domain.is_empty() {
            self.server
                .split(':')
                .next()
                .unwrap_or("127.0.0.1")
                .to_owned()
        } else {
            self.domain.clone()
        }
    }

    fn user_of(&self, n: &E164) -> String {
        match self.user_format.as_str() {
            "e164" => n.as_str().to_owned(),
            "national" => n.national().replace(' ', ""),
            _ => n.as_str().trim_start_matches('+').to_owned(),
        }
    }
}

struct CallCtx {
    call_id: String,
    caller: Option<E164>,
    started_at_ms: u64,
    answered_at_ms: Option<u64>,
}

#[derive(Default)]
struct Watch {
    tracker: Tracker,
    calls: HashMap<String, CallCtx>,
}

struct Inner {
    cfg: SipConfig,
    endpoint: EndpointInnerRef,
    server: SipAddr,
    local: SocketAddr,
    events: mpsc::Sender<CallEvent>,
    subscriptions: Mutex<HashMap<E164, CancellationToken>>,
    by_call_id: Mutex<HashMap<String, E164>>,
    watches: Mutex<HashMap<E164, Watch>>,
    active: Mutex<BTreeSet<E164>>,
    last_error: Mutex<Option<String>>,
    /// Legs of click-to-calls in progress, by SIP Call-ID.
    c2c_legs: Mutex<HashMap<String, Arc<c2c::Bridge>>>,
    /// Why the last click-to-call did not connect.
    last_c2c_error: Mutex<Option<String>>,
    cancel: CancellationToken,
}

/// The SIP provider (cheap to clone).
#[derive(Clone)]
pub struct SipProvider {
    inner: Arc<Inner>,
}

impl SipProvider {
    /// Binds the UDP transport and starts the SIP endpoint; events go to
    /// `events`.
    pub async fn start(cfg: SipConfig, events: mpsc::Sender<CallEvent>) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let bind: SocketAddr = cfg.bind.parse().map_err(|_| {
            anyhow::anyhow!(
                "telephony.sip.bind '{}' is not an address like 127.0.0.1:0",
                cfg.bind
            )
        })?;
        let server_uri = rsip::Uri::try_from(format!("sip:{}", cfg.server)).map_err(|e| {
            anyhow::anyhow!(
                "telephony.sip.server '{}' is not host:port: {e}",
                cfg.server
            )
        })?;
        let server = SipAddr::try_from(&server_uri)
            .map_err(|e| anyhow::anyhow!("telephony.sip.server '{}': {e}", cfg.server))?;
        // Bind on the interface that reaches the PBX when asked for any.
        let bind = if bind.ip().is_unspecified() {
            let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
            probe
                .connect(&cfg.server)
                .map_err(|e| anyhow::anyhow!("cannot route to the PBX at {}: {e}", cfg.server))?;
            SocketAddr::new(probe.local_addr()?.ip(), bind.port())
        } else {
            bind
        };
        let transport = TransportLayer::new(cancel.clone());
        let conn = UdpConnection::create_connection(bind, None, Some(cancel.child_token()))
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind SIP on {bind}: {e}"))?;
        let local = conn
            .get_addr()
            .get_socketaddr()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        transport.add_transport(conn.into());
        let endpoint = EndpointBuilder::new()
            // Click-to-call acknowledges the phone's 2xx itself, with the
            // destination's SDP answer (RFC 3725 flow I).
            .with_option(EndpointOption {
                auto_ack_2xx: false,
                ..Default::default()
            })
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent("LeanSync Voice")
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let inner = Arc::new(Inner {
            cfg,
            endpoint: endpoint.inner.clone(),
            server,
            local,
            events,
            subscriptions: Mutex::new(HashMap::new()),
            by_call_id: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            active: Mutex::new(BTreeSet::new()),
            last_error: Mutex::new(None),
            c2c_legs: Mutex::new(HashMap::new()),
            last_c2c_error: Mutex::new(None),
            cancel,
        });
        tokio::spawn(async move { endpoint.serve().await });
        tokio::spawn(incoming_loop(inner.clone(), incoming));
        tracing::info!(local = %local, server = %inner.cfg.server, "SIP provider started");
        Ok(Self { inner })
    }

    /// The local SIP address (for diagnostics and tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Provider for SipProvider {
    fn kind(&self) -> &'static str {
        "sip"
    }

    fn set_monitored(&self, numbers: BTreeSet<E164>) {
        let mut subs = self.inner.subscriptions.lock();
        subs.retain(|n, token| {
            let keep = numbers.contains(n);
            if !keep {
                token.cancel();
            }
            keep
        });
        for n in numbers {
            if subs.contains_key(&n) {
                continue;
            }
            let token = self.inner.cancel.child_token();
            subs.insert(n.clone(), token.clone());
            tokio::spawn(subscription_loop(self.inner.clone(), n, token));
        }
    }

    fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(c2c::originate(inner, req.phone, req.destination)) })
    }

    fn status(&self) -> ProviderStatus {
        let monitored = self.inner.subscriptions.lock().len();
        let active = self.inner.active.lock().len();
        ProviderStatus {
            kind: "sip",
            connected: monitored == 0 || active > 0,
            monitored,
            active,
            last_error: self
                .inner
                .last_error
                .lock()
                .clone()
                .or_else(|| self.inner.last_c2c_error.lock().clone()),
        }
    }
}

/// Keeps one number subscribed until `cancel`.
async fn subscription_loop(inner: Arc<Inner>, number: E164, cancel: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    while !cancel.is_cancelled() {
        let call_id = format!("ls-{}", uuid::Uuid::now_v7().simple());
        let from_tag = make_tag().to_string();
        let mut dialog = Sub {
            call_id: call_id.clone(),
            from_tag,
            to_tag: None,
            seq: 0,
        };
        inner
            .by_call_id
            .lock()
            .insert(call_id.clone(), number.clone());
        if let Some(w) = inner.watches.lock().get_mut(&number) {
            w.tracker.new_subscription();
        }
        loop {
            match subscribe(&inner, &number, &mut dialog, inner.cfg.expires).await {
                Ok(granted) => {
                    backoff = Duration::from_secs(1);
                    inner.active.lock().insert(number.clone());
                    *inner.last_error.lock() = None;
                    let refresh = Duration::from_secs(u64::from(granted.max(10)) * 8 / 10);
                    tokio::select! {
                        _ = tokio::time::sleep(refresh) => continue,
                        _ = cancel.cancelled() => {
                            let _ = subscribe(&inner, &number, &mut dialog, 0).await;
                            break;
                        }
                    }
                }
                Err(e) => {
                    inner.active.lock().remove(&number);
                    tracing::warn!(number = %number, error = %e, retry_in = ?backoff, "dialog subscription failed");
                    *inner.last_error.lock() = Some(format!("{number}: {e}"));
                    break;
                }
            }
        }
        inner.by_call_id.lock().remove(&call_id);
        if cancel.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    inner.active.lock().remove(&number);
    inner.watches.lock().remove(&number);
}

struct Sub {
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    seq: u32,
}

fn tag_of(header_value: &str) -> Option<String> {
    header_value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_owned))
}

/// Sends one SUBSCRIBE (initial, refresh or `expires = 0`), answering
/// digest challenges; returns the granted expiry.
async fn subscribe(
    inner: &Inner,
    number: &E164,
    sub: &mut Sub,
    expires: u32,
) -> Result<u32, String> {
    let cfg = &inner.cfg;
    let domain = cfg.domain();
    let target = rsip::Uri::try_from(format!("sip:{}@{domain}", cfg.user_of(number)))
        .map_err(|e| e.to_string())?;
    let me =
        rsip::Uri::try_from(format!("sip:{}@{domain}", cfg.username)).map_err(|e| e.to_string())?;
    let contact = rsip::Uri::try_from(format!("sip:{}@{}", cfg.username, inner.local))
        .map_err(|e| e.to_string())?;
    let via = inner
        .endpoint
        .get_via(None, None)
        .map_err(|e| e.to_string())?;
    let from = rsip::typed::From {
        display_name: None,
        uri: me,
        params: vec![],
    }
    .with_tag(sub.from_tag.clone().into());
    let mut to = rsip::typed::To {
        display_name: None,
        uri: target.clone(),
        params: vec![],
    };
    if let Some(t) = &sub.to_tag {
        to = to.with_tag(t.clone().into());
    }
    sub.seq += 1;
    let mut request = inner.endpoint.make_request(
        Method::Subscribe,
        target,
        via,
        from,
        to,
        sub.seq,
        Some(sub.call_id.clone().into()),
    );
    request.headers.unique_push(
        rsip::typed::Contact {
            display_name: None,
            uri: contact,
            params: vec![],
        }
        .into(),
    );
    request.headers.unique_push(Header::Event("dialog".into()));
    request
        .headers
        .unique_push(Header::Accept("application/dialog-info+xml".into()));
    request.headers.unique_push(Header::Expires(expires.into()));
    let key = TransactionKey::from_request(&request, TransactionRole::Client)
        .map_err(|e| e.to_string())?;
    let mut tx = Transaction::new_client(key, request, inner.endpoint.clone(), None);
    tx.destination = Some(inner.server.clone());
    tx.send()
        .await
        .map_err(|e| format!("cannot send SUBSCRIBE to {}: {e}", cfg.server))?;
    let credential = Credential {
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        realm: None,
        auth_username: None,
    };
    let mut answered_challenge = false;
    while let Some(msg) = tx.receive().await {
        let SipMessage::Response(resp) = msg else {
            continue;
        };
        match resp.status_code.clone() {
            StatusCode::Trying => continue,
            StatusCode::Unauthorized | StatusCode::ProxyAuthenticationRequired => {
                if answered_challenge {
                    return Err(format!(
                        "the PBX refused the credentials of '{}' ({}); check telephony.sip.username and password",
                        cfg.username, resp.status_code
                    ));
                }
                answered_challenge = true;
                sub.seq += 1;
                tx = handle_client_authenticate(sub.seq, &tx, resp, &credential)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.destination = Some(inner.server.clone());
                tx.send().await.map_err(|e| e.to_string())?;
            }
            code if code.code() >= 200 && code.code() < 300 => {
                if sub.to_tag.is_none()
                    && let Ok(to) = resp.to_header()
                {
                    sub.to_tag = tag_of(to.value());
                }
                let granted = resp
                    .expires_header()
                    .and_then(|e| e.value().trim().parse().ok())
                    .unwrap_or(expires);
                return Ok(granted);
            }
            code if code.code() < 200 => continue,
            code => return Err(format!("SUBSCRIBE for {number} answered {code}")),
        }
    }
    Err(format!(
        "no answer to SUBSCRIBE for {number} from {}",
        cfg.server
    ))
}

/// Answers requests from the PBX; NOTIFYs feed the trackers.
async fn incoming_loop(
    inner: Arc<Inner>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
) {
    while let Some(mut tx) = incoming.recv().await {
        match tx.original.method {
            Method::Notify => {
                let call_id = tx
                    .original
                    .call_id_header()
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(tx.original.body()).to_string();
                let number = inner.by_call_id.lock().get(&call_id).cloned();
                let status = if number.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CallTransactionDoesNotExist
                };
                let _ = tx.reply(status).await;
                if let Some(number) = number {
                    on_notify(&inner, &number, &body);
                }
            }
            Method::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Method::Bye => {
                let call_id = tx
                    .original
                    .call_id_header()
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default();
                let status = if c2c::on_bye(&inner, &call_id) {
                    StatusCode::OK
                } else {
                    StatusCode::CallTransactionDoesNotExist
                };
                let _ = tx.reply(status).await;
            }
            Method::Invite => {
                // Not a phone: only re-INVITEs on click-to-call legs reach
                // here, and the bridge keeps its negotiated media.
                let _ = tx.reply(StatusCode::NotAcceptableHere).await;
            }
            Method::Ack => {}
            _ => {
                let _ = tx.reply(StatusCode::MethodNotAllowed).await;
            }
        }
    }
}

fn on_notify(inner: &Inner, number: &E164, body: &str) {
    let info = match dialoginfo::parse(body) {
        Ok(Some(info)) => info,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(number = %number, error = %e, "unreadable dialog-info NOTIFY ignored");
            return;
        }
    };
    let now = now_ms();
    let mut events = Vec::new();
    {
        let mut watches = inner.watches.lock();
        let w = watches.entry(number.clone()).or_default();
        for t in w.tracker.observe(&info, now) {
            match t {
                Transition::Ringing {
                    call_id: Some(call_id),
                    ..
                } if c2c::is_own_leg(inner, &call_id) => {
                    // A leg of our own click-to-call, reported on its own.
                }
                Transition::Ringing {
                    dialog_id,
                    call_id,
                    remote,
                    ..
                } => {
                    let caller = remote
                        .as_deref()
                        .and_then(dialoginfo::user_of)
                        .and_then(|u| E164::parse(&u).ok());
                    let ctx = CallCtx {
                        call_id: format!("sip-{}", call_id.unwrap_or_else(|| dialog_id.clone())),
                        caller,
                        started_at_ms: now,
                        answered_at_ms: None,
                    };
                    events.push(event(&ctx, number, CallState::Ringing, None));
                    w.calls.insert(dialog_id, ctx);
                }
                Transition::Answered { dialog_id, .. } => {
                    if let Some(ctx) = w.calls.get_mut(&dialog_id) {
                        ctx.answered_at_ms = Some(now);
                        events.push(event(ctx, number, CallState::Answered, None));
                    }
                }
                Transition::Ended {
                    dialog_id,
                    duration_ms,
                    ..
                } => {
                    if let Some(ctx) = w.calls.remove(&dialog_id) {
                        events.push(event(
                            &ctx,
                            number,
                            CallState::Ended,
                            Some(((duration_ms + 500) / 1000) as u32),
                        ));
                    }
                }
                Transition::Missed { dialog_id, .. } => {
                    if let Some(ctx) = w.calls.remove(&dialog_id) {
                        events.push(event(&ctx, number, CallState::Missed, None));
                    }
                }
            }
        }
    }
    for e in events {
        if inner.events.try_send(e).is_err() {
            tracing::error!(number = %number, "call event dropped: the pipeline queue is full");
        }
    }
}

fn event(ctx: &CallCtx, number: &E164, state: CallState, duration_secs: Option<u32>) -> CallEvent {
    let now = now_ms();
    CallEvent {
        call_id: ctx.call_id.clone(),
        direction: Direction::Inbound,
        state,
        caller: ctx.caller.clone(),
        callee: number.clone(),
        monitored: number.clone(),
        started_at_ms: ctx.started_at_ms,
        answered_at_ms: ctx.answered_at_ms,
        ended_at_ms: matches!(state, CallState::Ended | CallState::Missed).then_some(now),
        duration_secs,
    }
}
