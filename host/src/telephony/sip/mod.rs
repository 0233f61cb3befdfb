//! The `sip` provider: watches the licensed numbers on a real PBX with the
//! dialog event package (RFC 4235) over rsipstack, and turns the NOTIFYs
//! into normalised call events.
//!
//! For every monitored number it keeps one subscription: `SUBSCRIBE
//! sip:<user>@<domain>` with `Event: dialog`, digest-authenticated (401 or
//! 407), refreshed at 80 % of the granted expiry, re-established with
//! exponential backoff (1 s → 60 s) after errors, 481 or timeouts, and
//! ended (`Expires: 0`) when the number loses its last license. New
//! SUBSCRIBEs are paced ([`SUBSCRIBE_SPACING`]) so a large set never
//! arrives at the PBX as one burst.
//!
//! PBX restarts: a PBX keeps subscriptions in memory, so after a restart
//! its NOTIFYs stop silently. A keepalive ([`keepalive_loop`]) sends
//! OPTIONS every `keepalive_secs`; when the PBX stops answering, then
//! answers again, every number is subscribed anew at once. A restart
//! quicker than one keepalive period is caught by the canary: each answered
//! keepalive also refreshes one subscription (in turn), and a 481 to any
//! refresh means the PBX lost them all.
//!
//! Refused credentials concern the whole watcher account: one refusal
//! holds every number back ([`AuthHold`], 15 s doubling to 10 min), then a
//! single number probes again, so a wrong password never floods the PBX
//! (or trips its intrusion detection).
//!
//! The watcher account also registers its Contact ([`register`]), over UDP
//! or one TCP connection ([`transport`]).
//! Click-to-call is third-party call control, RFC 3725 flow I ([`c2c`]).

mod c2c;
mod register;
mod transport;

pub use register::RegistrationStatus;
pub use transport::SipTransport;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::authenticate::{Credential, handle_client_authenticate};
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{self as rsip, Header, Method, SipMessage, StatusCode};
use rsipstack::transaction::endpoint::{EndpointInnerRef, EndpointOption};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{Transaction, make_tag};
use rsipstack::transport::{SipAddr, TransportLayer};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dialoginfo::{self, Tracker, Transition};
use super::{Originate, Provider, ProviderStatus, TelephonyError};
use crate::call::{CallEvent, CallState, Direction, now_ms};
use crate::number::E164;

/// Settings of the SIP connection (`[telephony.sip]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// PBX address requests are sent to, `host:port`.
    pub server: String,
    /// How the PBX is reached: `udp` (the default) or `tcp` (one
    /// connection carries everything, the PBX's requests included).
    pub transport: SipTransport,
    /// SIP domain and digest realm; empty means the server's host.
    pub domain: String,
    /// Watcher account on the PBX.
    pub username: String,
    /// Its password (prefer `LEANSYNC_SIP_PASSWORD`).
    pub password: String,
    /// Local address to bind, `127.0.0.1:0` for any free port (UDP only:
    /// over TCP the system picks the connection's local port).
    pub bind: String,
    /// Requested lifetime of the subscriptions and of the registration,
    /// seconds.
    pub expires: u32,
    /// Whether the watcher account registers its Contact (where the PBX
    /// reaches the host) at the PBX; refreshed at 80 % of the granted
    /// expiry, removed on shutdown.
    pub register: bool,
    /// How a monitored number is written as a SIP user: `digits`
    /// (`41441234567`), `e164` (`+41441234567`) or `national` (`0441234567`).
    pub user_format: String,
    /// Click-to-call: how long the user's phone may ring, seconds.
    pub ring_timeout_secs: u32,
    /// Click-to-call: how long the destination may ring, seconds (keep it
    /// under 32: the phone's answer waits unacknowledged meanwhile).
    pub answer_timeout_secs: u32,
    /// Seconds between OPTIONS keepalives to the PBX (0: none; not with
    /// `tcp`). A PBX that stops answering and answers again, or a TCP
    /// connection reopened on a new port, gets the registration and every
    /// subscription anew.
    pub keepalive_secs: u32,
    /// The customer's telephony account this connection serves (`None`:
    /// the host's own `[telephony.sip]`, `""`: one being created); error
    /// messages point there.
    #[serde(skip)]
    pub account: Option<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:5060".into(),
            transport: SipTransport::Udp,
            domain: String::new(),
            username: "leansync".into(),
            password: String::new(),
            bind: "0.0.0.0:0".into(),
            expires: 600,
            register: true,
            user_format: "digits".into(),
            ring_timeout_secs: 30,
            answer_timeout_secs: 25,
            keepalive_secs: 5,
            account: None,
        }
    }
}

impl SipConfig {
    /// Where setting `name` is changed: `telephony.sip.<name>` in the host
    /// configuration, or `settings.<name>` of the telephony account.
    pub fn setting(&self, name: &str) -> String {
        match &self.account {
            None => format!("telephony.sip.{name}"),
            Some(id) if id.is_empty() => format!("settings.{name}"),
            Some(id) => format!("settings.{name} of telephony account '{id}'"),
        }
    }

    /// How to fix refused credentials.
    fn credentials_hint(&self) -> String {
        match &self.account {
            None => "check telephony.sip.username and telephony.sip.password (LEANSYNC_SIP_USERNAME, LEANSYNC_SIP_PASSWORD)".into(),
            Some(id) => format!(
                "check settings.username and the password (the account's secret) of telephony account '{id}'; change them with PUT /api/v1/telephony-accounts/{id}"
            ),
        }
    }

    /// Problems with the settings, each naming its field and the fix
    /// (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let server_ok = self.server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        }) && rsip::Uri::try_from(format!("sip:{}", self.server)).is_ok();
        if !server_ok {
            out.push(format!(
                "{}: '{}' is not the PBX address as host:port, e.g. \"pbx.example.ch:5060\"",
                self.setting("server"),
                self.server
            ));
        }
        if self.bind.parse::<SocketAddr>().is_err() {
            out.push(format!(
                "{}: '{}' is not a local address like 0.0.0.0:0",
                self.setting("bind"),
                self.bind
            ));
        }
        if self.username.trim().is_empty() || self.username.contains(['@', ':', ' ']) {
            out.push(format!(
                "{}: '{}' is not a SIP user name (the watcher account on the PBX, without @domain)",
                self.setting("username"),
                self.username
            ));
        }
        if !["digits", "e164", "national"].contains(&self.user_format.as_str()) {
            out.push(format!(
                "{}: '{}' is unknown; use \"digits\", \"e164\" or \"national\"",
                self.setting("user_format"),
                self.user_format
            ));
        }
        if self.expires < 60 {
            out.push(format!(
                "{}: {} s is too short; use 60 or more (600 is usual)",
                self.setting("expires"),
                self.expires
            ));
        }
        if self.transport == SipTransport::Tcp && self.keepalive_secs == 0 {
            out.push(format!(
                "{}: 0 does not work with transport \"tcp\" (the PBX closes an idle connection and every NOTIFY would be missed); use 5 or more, or transport \"udp\"",
                self.setting("keepalive_secs")
            ));
        }
        out
    }

    /// Digest credentials of the account, for 401/407 challenges.
    fn credential(&self) -> Credential {
        Credential {
            username: self.username.clone(),
            password: self.password.clone(),
            realm: None,
            auth_username: None,
        }
    }

    /// The watcher account's address of record, `sip:<username>@<domain>`.
    fn me(&self) -> Result<rsip::Uri, String> {
        let text = format!("sip:{}@{}", self.username, self.domain());
        rsip::Uri::try_from(text.as_str())
            .map_err(|e| format!("telephony.sip.username / domain make no SIP URI ({text}): {e}"))
    }

    /// The SIP domain: the one configured, else the server's host.
    pub(crate) fn domain(&self) -> String {
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
    /// The device that picked up, when the PBX said.
    answered_by: Option<String>,
}

#[derive(Default)]
struct Watch {
    tracker: Tracker,
    calls: HashMap<String, CallCtx>,
}

/// Gap between two new SUBSCRIBEs: 100 numbers reach the PBX within
/// 200 ms, 1000 within 2 s.
const SUBSCRIBE_SPACING: Duration = Duration::from_millis(2);

/// First and longest wait after the PBX refused the credentials.
const AUTH_BACKOFF: (Duration, Duration) = (Duration::from_secs(15), Duration::from_secs(600));

/// How long the number probing the credentials has before others may try.
const AUTH_PROBE_WINDOW: Duration = Duration::from_secs(10);

/// The subscription task of one monitored number.
struct SubHandle {
    cancel: CancellationToken,
    /// Makes the task refresh at once (the keepalive's canary).
    refresh_now: Arc<Notify>,
}

/// Holds every number back while the PBX refuses the watcher's credentials.
#[derive(Debug, Default)]
struct AuthHold {
    /// No new SUBSCRIBE before this instant; `None`: nothing refused.
    until: Option<Instant>,
    /// The current wait, doubled on every refusal.
    backoff: Duration,
    /// Refusals so far: tells a number whether one came in while it waited
    /// for its slot.
    refusals: u64,
}

impl AuthHold {
    /// Whether a number may send a new SUBSCRIBE at `now`: `Ok` with the
    /// refusals so far, or `Err` with when to ask again. Once a hold is
    /// over, the first number to ask goes (it probes the credentials) and
    /// the others wait [`AUTH_PROBE_WINDOW`] for its answer.
    fn turn(&mut self, now: Instant) -> Result<u64, Instant> {
        match self.until {
            Some(until) if until > now => Err(until),
            Some(_) => {
                self.until = Some(now + AUTH_PROBE_WINDOW);
                Ok(self.refusals)
            }
            None => Ok(self.refusals),
        }
    }

    /// The PBX refused the credentials: hold every number back; returns for
    /// how long.
    fn refused(&mut self, now: Instant) -> Duration {
        self.backoff = (self.backoff * 2).clamp(AUTH_BACKOFF.0, AUTH_BACKOFF.1);
        self.until = Some(now + self.backoff);
        self.refusals += 1;
        self.backoff
    }

    /// The PBX accepted them; `true` when numbers were held back.
    fn accepted(&mut self) -> bool {
        self.backoff = Duration::ZERO;
        self.until.take().is_some()
    }
}

struct Inner {
    cfg: SipConfig,
    endpoint: EndpointInnerRef,
    server: SipAddr,
    events: mpsc::Sender<CallEvent>,
    subscriptions: Mutex<HashMap<E164, SubHandle>>,
    by_call_id: Mutex<HashMap<String, E164>>,
    watches: Mutex<HashMap<E164, Watch>>,
    active: Mutex<BTreeSet<E164>>,
    last_error: Mutex<Option<String>>,
    /// Whether the PBX answered the last keepalive.
    pbx_up: AtomicBool,
    /// Why the PBX counts as down.
    pbx_error: Mutex<Option<String>>,
    /// Bumped when the PBX lost every subscription: each subscription task
    /// starts a new one at once.
    epoch: watch::Sender<u64>,
    /// Earliest instant for the next new SUBSCRIBE (pacing).
    next_slot: Mutex<Instant>,
    auth_hold: Mutex<AuthHold>,
    /// Wakes the numbers held back once the credentials are accepted.
    auth_ok: Notify,
    /// Legs of click-to-calls in progress, by SIP Call-ID.
    c2c_legs: Mutex<HashMap<String, Arc<c2c::Bridge>>>,
    /// Why the last click-to-call did not connect.
    last_c2c_error: Mutex<Option<String>>,
    /// The watcher account's registration, as last heard from the PBX.
    registration: Mutex<RegistrationStatus>,
    /// Ends the registration (it then unregisters).
    registration_cancel: Mutex<CancellationToken>,
    /// The registration task, awaited on shutdown.
    registration_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The local TCP address our Contact names (TCP only): when the
    /// connection is reopened elsewhere, everything is renewed.
    contact_addr: Mutex<Option<SipAddr>>,
    cancel: CancellationToken,
}

/// The SIP provider (cheap to clone).
#[derive(Clone)]
pub struct SipProvider {
    inner: Arc<Inner>,
}

impl SipProvider {
    /// Sets up the transport and starts the SIP endpoint, the keepalive and
    /// the registration; events go to `events`.
    pub async fn start(cfg: SipConfig, events: mpsc::Sender<CallEvent>) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let bind: SocketAddr = cfg.bind.parse().map_err(|_| {
            anyhow::anyhow!(
                "telephony.sip.bind '{}' is not an address like 127.0.0.1:0",
                cfg.bind
            )
        })?;
        if cfg.transport == SipTransport::Tcp && cfg.keepalive_secs == 0 {
            anyhow::bail!(
                "telephony.sip.keepalive_secs = 0 does not work with transport \"tcp\": an idle TCP connection is closed by the PBX and the host would miss every NOTIFY; set keepalive_secs (e.g. 5, LEANSYNC_SIP_KEEPALIVE_SECS) or use transport \"udp\""
            );
        }
        let server = cfg.transport.server(&cfg.server)?;
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
        cfg.transport.prepare(&transport, bind, &cancel).await?;
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
            events,
            subscriptions: Mutex::new(HashMap::new()),
            by_call_id: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            active: Mutex::new(BTreeSet::new()),
            last_error: Mutex::new(None),
            pbx_up: AtomicBool::new(true),
            pbx_error: Mutex::new(None),
            epoch: watch::Sender::new(0),
            next_slot: Mutex::new(Instant::now()),
            auth_hold: Mutex::new(AuthHold::default()),
            auth_ok: Notify::new(),
            c2c_legs: Mutex::new(HashMap::new()),
            last_c2c_error: Mutex::new(None),
            registration: Mutex::new(RegistrationStatus::default()),
            registration_cancel: Mutex::new(cancel.child_token()),
            registration_task: Mutex::new(None),
            contact_addr: Mutex::new(None),
            cancel,
        });
        tokio::spawn(async move { endpoint.serve().await });
        tokio::spawn(incoming_loop(inner.clone(), incoming));
        tokio::spawn(keepalive_loop(inner.clone()));
        if inner.cfg.register {
            let task = tokio::spawn(register::registration_loop(inner.clone()));
            *inner.registration_task.lock() = Some(task);
        }
        tracing::info!(server = %inner.cfg.server, transport = %inner.cfg.transport, "SIP provider started");
        Ok(Self { inner })
    }

    /// Ends every subscription (`Expires: 0`), then the endpoint: for a
    /// connection whose telephony account was removed or changed.
    pub fn stop(&self) {
        self.set_monitored(BTreeSet::new());
        let unregister = Provider::shutdown(self);
        let cancel = self.inner.cancel.clone();
        tokio::spawn(async move {
            // Time for the unsubscribes and the unregister to go out and be
            // answered.
            let _ = tokio::time::timeout(Duration::from_secs(5), unregister).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
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
        subs.retain(|n, sub| {
            let keep = numbers.contains(n);
            if !keep {
                sub.cancel.cancel();
            }
            keep
        });
        for n in numbers {
            if subs.contains_key(&n) {
                continue;
            }
            let handle = SubHandle {
                cancel: self.inner.cancel.child_token(),
                refresh_now: Arc::new(Notify::new()),
            };
            tokio::spawn(subscription_loop(
                self.inner.clone(),
                n.clone(),
                handle.cancel.clone(),
                handle.refresh_now.clone(),
            ));
            subs.insert(n, handle);
        }
    }

    fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(c2c::originate(inner, req.phone, req.destination)) })
    }

    fn status(&self) -> ProviderStatus {
        let monitored = self.inner.subscriptions.lock().len();
        let pbx_up = self.inner.pbx_up.load(Ordering::SeqCst);
        let active = if pbx_up {
            self.inner.active.lock().len()
        } else {
            0
        };
        let registration = self
            .inner
            .cfg
            .register
            .then(|| self.inner.registration.lock().clone());
        ProviderStatus {
            kind: "sip",
            // What monitoring needs; a failed registration shows in
            // `registration` and `last_error`.
            connected: pbx_up && (monitored == 0 || active > 0),
            monitored,
            active,
            last_error: self
                .inner
                .pbx_error
                .lock()
                .clone()
                .or_else(|| self.inner.last_error.lock().clone())
                .or_else(|| registration.as_ref().and_then(|r| r.error.clone()))
                .or_else(|| self.inner.last_c2c_error.lock().clone()),
            registration,
        }
    }

    fn set_owner(&self, owner: bool) {
        if !self.inner.cfg.register || self.inner.cancel.is_cancelled() {
            return;
        }
        let mut task = self.inner.registration_task.lock();
        let running = task.as_ref().is_some_and(|t| !t.is_finished());
        if owner && !running {
            *self.inner.registration_cancel.lock() = self.inner.cancel.child_token();
            *task = Some(tokio::spawn(register::registration_loop(
                self.inner.clone(),
            )));
            tracing::info!(server = %self.inner.cfg.server, "this host owns the SIP connection now: registering");
        } else if !owner && running {
            // The loop unregisters, then ends.
            self.inner.registration_cancel.lock().cancel();
            *task = None;
            tracing::info!(server = %self.inner.cfg.server, "another host owns the SIP connection: unregistering");
        }
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.registration_cancel.lock().cancel();
            let task = inner.registration_task.lock().take();
            if let Some(task) = task {
                // The unregister has its own deadline; this is a backstop.
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        })
    }
}

/// Keeps one number subscribed until `cancel`; `refresh_now` makes it
/// refresh at once.
async fn subscription_loop(
    inner: Arc<Inner>,
    number: E164,
    cancel: CancellationToken,
    refresh_now: Arc<Notify>,
) {
    let mut epoch = inner.epoch.subscribe();
    let mut backoff = Duration::from_secs(1);
    while wait_for_turn(&inner, &cancel).await {
        let mut dialog = Series::new("ls", None);
        let call_id = dialog.call_id.clone();
        inner
            .by_call_id
            .lock()
            .insert(call_id.clone(), number.clone());
        if let Some(w) = inner.watches.lock().get_mut(&number) {
            w.tracker.new_subscription();
        }
        // This new subscription covers every PBX restart noticed so far.
        let started_in = *epoch.borrow_and_update();
        let mut again_at_once = false;
        loop {
            match subscribe(&inner, &number, &mut dialog, inner.cfg.expires).await {
                Ok(granted) => {
                    backoff = Duration::from_secs(1);
                    credentials_accepted(&inner);
                    inner.active.lock().insert(number.clone());
                    *inner.last_error.lock() = None;
                    let refresh = Duration::from_secs(u64::from(granted.max(10)) * 8 / 10);
                    tokio::select! {
                        _ = tokio::time::sleep(refresh) => continue,
                        _ = refresh_now.notified() => continue,
                        _ = epoch.changed() => {
                            // The PBX lost its subscriptions: start anew.
                            again_at_once = true;
                            break;
                        }
                        _ = cancel.cancelled() => {
                            let _ = subscribe(&inner, &number, &mut dialog, 0).await;
                            break;
                        }
                    }
                }
                Err(e) => {
                    inner.active.lock().remove(&number);
                    let message = match &e {
                        RequestError::Credentials(_) => {
                            let wait = credentials_refused(&inner);
                            again_at_once = true; // the hold does the waiting
                            format!("{e}; next attempt in {} s", wait.as_secs())
                        }
                        RequestError::Gone(_) => {
                            // A PBX that forgot one subscription (restart)
                            // forgot them all: renew every number, once per
                            // restart however many refreshes meet a 481.
                            inner.epoch.send_if_modified(|current| {
                                let first = *current == started_in;
                                if first {
                                    tracing::warn!(number = %number, "the PBX lost the dialog subscriptions (481): subscribing every number anew");
                                    *current += 1;
                                }
                                first
                            });
                            again_at_once = true;
                            format!("{number}: {e}")
                        }
                        RequestError::Failed(_) => format!("{number}: {e}"),
                    };
                    tracing::warn!(number = %number, error = %e, retry_in = ?backoff, "dialog subscription failed");
                    *inner.last_error.lock() = Some(message);
                    break;
                }
            }
        }
        inner.by_call_id.lock().remove(&call_id);
        if cancel.is_cancelled() {
            break;
        }
        if again_at_once {
            backoff = Duration::from_secs(1);
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            // The PBX is back: no reason to wait out the backoff.
            _ = epoch.changed() => backoff = Duration::from_secs(0),
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    }
    inner.active.lock().remove(&number);
    inner.watches.lock().remove(&number);
}

/// Waits until this number may send a new SUBSCRIBE: not while the PBX
/// refuses the credentials ([`AuthHold`]), and [`SUBSCRIBE_SPACING`] after
/// the previous new SUBSCRIBE. `false` when cancelled meanwhile.
async fn wait_for_turn(inner: &Inner, cancel: &CancellationToken) -> bool {
    loop {
        let turn = inner.auth_hold.lock().turn(Instant::now());
        let refusals = match turn {
            Ok(refusals) => refusals,
            Err(until) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = inner.auth_ok.notified() => {}
                    _ = cancel.cancelled() => return false,
                }
                continue;
            }
        };
        let slot = {
            let mut next = inner.next_slot.lock();
            let slot = (*next).max(Instant::now());
            *next = slot + SUBSCRIBE_SPACING;
            slot
        };
        tokio::select! {
            _ = tokio::time::sleep_until(slot) => {}
            _ = cancel.cancelled() => return false,
        }
        // A refusal may have come in while this number waited for its slot.
        if inner.auth_hold.lock().refusals == refusals {
            return true;
        }
    }
}

fn credentials_accepted(inner: &Inner) {
    if inner.auth_hold.lock().accepted() {
        inner.auth_ok.notify_waiters();
    }
}

fn credentials_refused(inner: &Inner) -> Duration {
    inner.auth_hold.lock().refused(Instant::now())
}

/// Sends OPTIONS to the PBX every `keepalive_secs`. When it stops
/// answering, the provider is shown disconnected; when it answers again,
/// every number is subscribed anew. While it answers, each keepalive also
/// refreshes one subscription in turn (the canary): a PBX restarted between
/// two keepalives answers it 481, which renews them all.
async fn keepalive_loop(inner: Arc<Inner>) {
    if inner.cfg.keepalive_secs == 0 {
        return;
    }
    let period = Duration::from_secs(u64::from(inner.cfg.keepalive_secs));
    let wait = period.min(Duration::from_secs(2));
    let mut series = Series::new("ls-ka", None);
    let mut canary = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = inner.cancel.cancelled() => return,
        }
        let answer = options(&inner, &mut series, wait).await;
        let was_up = inner.pbx_up.swap(answer.is_ok(), Ordering::SeqCst);
        let moved = answer.is_ok() && contact_moved(&inner).await;
        match answer {
            Err(e) if was_up => {
                tracing::warn!(server = %inner.cfg.server, "{e}");
                inner.active.lock().clear();
                *inner.pbx_error.lock() = Some(e);
            }
            Err(_) => {}
            Ok(()) if !was_up => {
                tracing::info!(server = %inner.cfg.server, "the PBX answers again: registering and subscribing every number anew");
                *inner.pbx_error.lock() = None;
                inner.epoch.send_modify(|e| *e += 1);
            }
            Ok(()) if moved => {
                tracing::info!(server = %inner.cfg.server, "the TCP connection to the PBX was reopened: registering and subscribing every number anew");
                inner.epoch.send_modify(|e| *e += 1);
            }
            Ok(()) => {
                let next = {
                    let subs = inner.subscriptions.lock();
                    let active = inner.active.lock();
                    let live: Vec<&SubHandle> = active.iter().filter_map(|n| subs.get(n)).collect();
                    (!live.is_empty()).then(|| live[canary % live.len()].refresh_now.clone())
                };
                canary = canary.wrapping_add(1);
                if let Some(refresh) = next {
                    refresh.notify_one();
                }
            }
        }
    }
}

/// Over TCP: whether the connection to the PBX now has another local
/// address than the one our Contact names (the PBX closed it and it was
/// reopened), so registration and subscriptions must be renewed. Over UDP
/// the address never moves.
async fn contact_moved(inner: &Inner) -> bool {
    if inner.cfg.transport != SipTransport::Tcp {
        return false;
    }
    let Ok(now) = inner.local().await else {
        return false;
    };
    let before = inner.contact_addr.lock().replace(now.clone());
    before.is_some_and(|before| before != now)
}

/// One OPTIONS to the PBX; any final answer (even 4xx, even a refusal of
/// the credentials) means it is up.
async fn options(inner: &Inner, series: &mut Series, wait: Duration) -> Result<(), String> {
    let cfg = &inner.cfg;
    let answered = tokio::time::timeout(wait, async {
        let pbx = rsip::Uri::try_from(format!("sip:{}", cfg.server)).ok()?;
        let request = inner.request(Method::Options, series, pbx).await.ok()?;
        match inner.send(request, series).await {
            Ok(_) | Err(RequestError::Credentials(_)) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    match answered {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "the PBX at {} does not answer (no reply to OPTIONS within {} s): no calls are reported until it is back; check that it runs and that {} is right",
            cfg.server,
            wait.as_secs_f32(),
            cfg.setting("server")
        )),
    }
}

/// The identifiers a series of requests from the watcher account shares
/// (a subscription, the registration, the keepalive).
struct Series {
    call_id: String,
    from_tag: String,
    /// The PBX's tag, once a subscription is established.
    to_tag: Option<String>,
    /// Where requests go when not to the To URI: the PBX's Contact from a
    /// subscription's first 2xx (RFC 6665), the registrar.
    remote_target: Option<rsip::Uri>,
    seq: u32,
}

impl Series {
    fn new(prefix: &str, remote_target: Option<rsip::Uri>) -> Self {
        Self {
            call_id: format!("{prefix}-{}", uuid::Uuid::now_v7().simple()),
            from_tag: make_tag().to_string(),
            to_tag: None,
            remote_target,
            seq: 0,
        }
    }
}

/// Why a request to the PBX failed.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    /// The PBX refused the watcher account's credentials.
    #[error("{0}")]
    Credentials(String),
    /// The PBX does not know the subscription (481): it lost its state.
    #[error("{0}")]
    Gone(String),
    /// Anything else: no answer, another refusal, a local error.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for RequestError {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

fn tag_of(header_value: &str) -> Option<String> {
    header_value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_owned))
}

/// Splits a header value listing `<uri>;params, <uri>` at top-level commas.
pub(super) fn split_uris(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                out.push(value[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = value[start..].trim();
    if !last.is_empty() {
        out.push(last.to_owned());
    }
    out
}

impl Inner {
    /// The next request of `series` from the watcher account to `to`.
    async fn request(
        &self,
        method: Method,
        series: &mut Series,
        to: rsip::Uri,
    ) -> Result<rsip::Request, String> {
        let via = self.via().await?;
        let from = rsip::typed::From {
            display_name: None,
            uri: self.cfg.me()?,
            params: vec![],
        }
        .with_tag(series.from_tag.clone().into());
        let request_uri = series.remote_target.clone().unwrap_or_else(|| to.clone());
        let mut to = rsip::typed::To {
            display_name: None,
            uri: to,
            params: vec![],
        };
        if let Some(t) = &series.to_tag {
            to = to.with_tag(t.clone().into());
        }
        series.seq += 1;
        Ok(self.endpoint.make_request(
            method,
            request_uri,
            via,
            from,
            to,
            series.seq,
            Some(series.call_id.clone().into()),
        ))
    }

    /// Sends a request of `series` to the PBX, answering one digest
    /// challenge (401 or 407) with the account's credentials; returns the
    /// final response. A second challenge means the credentials are wrong.
    async fn send(
        &self,
        request: rsip::Request,
        series: &mut Series,
    ) -> Result<rsip::Response, RequestError> {
        let cfg = &self.cfg;
        let method = request.method;
        let key = TransactionKey::from_request(&request, TransactionRole::Client)
            .map_err(|e| e.to_string())?;
        let mut tx = Transaction::new_client(key, request, self.endpoint.clone(), None);
        tx.destination = Some(self.server.clone());
        tx.send()
            .await
            .map_err(|e| format!("cannot send {method} to {}: {e}", cfg.server))?;
        let credential = cfg.credential();
        let mut answered_challenge = false;
        while let Some(msg) = tx.receive().await {
            let SipMessage::Response(resp) = msg else {
                continue;
            };
            match resp.status_code.code() {
                401 | 407 if answered_challenge => {
                    return Err(RequestError::Credentials(format!(
                        "the PBX at {} refused the credentials of the telephony account '{}' ({}): {}",
                        cfg.server,
                        cfg.username,
                        resp.status_code,
                        cfg.credentials_hint()
                    )));
                }
                401 | 407 => {
                    answered_challenge = true;
                    series.seq += 1;
                    tx = handle_client_authenticate(series.seq, &tx, resp, &credential)
                        .await
                        .map_err(|e| e.to_string())?;
                    tx.destination = Some(self.server.clone());
                    tx.send().await.map_err(|e| e.to_string())?;
                }
                code if code < 200 => continue,
                _ => return Ok(resp),
            }
        }
        Err(RequestError::Failed(format!(
            "no answer to {method} from {}",
            cfg.server
        )))
    }
}

/// Sends one SUBSCRIBE (initial, refresh or `expires = 0`), answering
/// digest challenges; returns the granted expiry.
async fn subscribe(
    inner: &Inner,
    number: &E164,
    sub: &mut Series,
    expires: u32,
) -> Result<u32, RequestError> {
    let cfg = &inner.cfg;
    let target = rsip::Uri::try_from(format!("sip:{}@{}", cfg.user_of(number), cfg.domain()))
        .map_err(|e| e.to_string())?;
    let mut request = inner.request(Method::Subscribe, sub, target).await?;
    inner.push_contact(&mut request).await?;
    request.headers.unique_push(Header::Event("dialog".into()));
    request
        .headers
        .unique_push(Header::Accept("application/dialog-info+xml".into()));
    request.headers.unique_push(Header::Expires(expires.into()));
    let resp = inner.send(request, sub).await?;
    match resp.status_code.clone() {
        code if code.code() < 300 => {
            if sub.to_tag.is_none()
                && let Ok(to) = resp.to_header()
            {
                sub.to_tag = tag_of(to.value());
            }
            if sub.remote_target.is_none() {
                sub.remote_target = resp
                    .contact_header()
                    .ok()
                    .and_then(|c| c.typed().ok())
                    .map(|c| c.uri);
            }
            let granted = resp
                .expires_header()
                .and_then(|e| e.value().trim().parse().ok())
                .unwrap_or(expires);
            Ok(granted)
        }
        StatusCode::CallTransactionDoesNotExist => Err(RequestError::Gone(format!(
            "the PBX no longer knows the subscription for {number} (481)"
        ))),
        code => Err(RequestError::Failed(format!(
            "SUBSCRIBE for {number} answered {code}"
        ))),
    }
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
                        answered_by: None,
                    };
                    events.push(event(&ctx, number, CallState::Ringing, None));
                    w.calls.insert(dialog_id, ctx);
                }
                Transition::Answered {
                    dialog_id, device, ..
                } => {
                    if let Some(ctx) = w.calls.get_mut(&dialog_id) {
                        ctx.answered_at_ms = Some(now);
                        ctx.answered_by = device;
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
        answered_by: ctx.answered_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_route_lists_split_at_top_level_commas() {
        assert_eq!(
            split_uris("<sip:127.0.0.1:5060;lr;ftag=a,b>, <sip:10.0.0.1;lr>"),
            ["<sip:127.0.0.1:5060;lr;ftag=a,b>", "<sip:10.0.0.1;lr>"]
        );
        assert_eq!(split_uris("<sip:p;lr>"), ["<sip:p;lr>"]);
    }

    #[test]
    fn refused_credentials_hold_every_number_then_one_probes() {
        let t0 = Instant::now();
        let mut hold = AuthHold::default();
        assert_eq!(hold.turn(t0), Ok(0), "nothing refused: go");
        assert_eq!(hold.refused(t0), AUTH_BACKOFF.0);
        let until = t0 + AUTH_BACKOFF.0;
        assert_eq!(hold.turn(t0), Err(until), "held");
        assert_eq!(hold.turn(until - Duration::from_millis(1)), Err(until));

        // Over: exactly one number probes, the others wait for its answer.
        assert_eq!(hold.turn(until), Ok(1));
        assert_eq!(hold.turn(until), Err(until + AUTH_PROBE_WINDOW));
        // The probe refused again: twice as long, and a number that passed
        // before it sees the new refusal (refusals moved on).
        assert_eq!(hold.refused(until), AUTH_BACKOFF.0 * 2);
        assert_eq!(hold.refusals, 2);
        let later = until + AUTH_BACKOFF.0 * 2;
        assert_eq!(hold.turn(later), Ok(2));
        // Accepted: everybody goes, the backoff starts over.
        assert!(hold.accepted());
        assert!(!hold.accepted(), "nobody was held any more");
        assert_eq!(hold.turn(later), Ok(2));
        assert_eq!(hold.turn(later), Ok(2));
        assert_eq!(hold.refused(later), AUTH_BACKOFF.0);
    }

    #[test]
    fn the_credentials_backoff_stops_growing_at_its_maximum() {
        let t0 = Instant::now();
        let mut hold = AuthHold::default();
        let waits: Vec<u64> = (0..8).map(|_| hold.refused(t0).as_secs()).collect();
        assert_eq!(waits, [15, 30, 60, 120, 240, 480, 600, 600]);
    }
}
