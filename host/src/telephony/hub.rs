//! The telephony hub: the host's own provider (from `[telephony]`) and one
//! SIP connection per customer telephony account of provider `sip`, behind
//! the one [`Provider`] trait. A monitored number goes to the connection of
//! the telephony account it was imported from; every other number goes to
//! the host's provider, as before accounts had connections of their own. A
//! click-to-call goes through the connection of the calling number.
//!
//! A customer's connection failing (wrong password, PBX down) shows on that
//! telephony account only: the hub's own [`Provider::status`] (readiness)
//! is the host's provider.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use ipnet::IpNet;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::sip::{SipConfig, SipProvider};
use super::{Originate, Provider, ProviderStatus, TelephonyError};
use crate::call::CallEvent;
use crate::licensing::{Line, Lines};
use crate::number::E164;

/// What a customer sees of its PBX not answering: a refused connection and
/// silence read the same, so a telephony account cannot be used to tell
/// which ports of an address are open.
fn unreachable_alike(e: String) -> String {
    if e.contains("cannot open a TCP connection")
        || e.contains("no answer to")
        || e.contains("cannot send ")
    {
        "the PBX does not answer SIP (a refused connection and no answer are reported alike); check settings.server and that the PBX accepts this host".to_owned()
    } else {
        e
    }
}

/// The SIP settings of telephony account `account` (`""`: one being
/// created), its password being the account's secret; `Err` lists every
/// problem, each naming its field and the fix.
pub fn account_sip_config(
    account: &str,
    settings: &Value,
    secret: Option<&str>,
) -> Result<SipConfig, Vec<String>> {
    let Some(fields) = settings.as_object() else {
        return Err(vec!["settings must be a JSON object".into()]);
    };
    let mut problems = Vec::new();
    if !fields.contains_key("server") {
        problems.push(
            "settings.server is missing: the PBX address as host:port, e.g. \"pbx.example.ch:5060\""
                .to_owned(),
        );
    }
    for (name, value) in fields {
        if name == "numbers" {
            // The account's numbers to import (a plain SIP PBX cannot list
            // them), not a connection setting.
            if !value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
            {
                problems.push(
                    "settings.numbers: give the account's numbers as a list of strings, e.g. [\"044 123 45 67\"]".to_owned(),
                );
            }
            continue;
        }
        if name == "password" {
            problems.push(
                "settings.password: give the PBX password as \"secret\" (stored encrypted, never shown), not in settings".to_owned(),
            );
            continue;
        }
        // One field at a time, so a type error names its field.
        let one = Value::Object([(name.clone(), value.clone())].into_iter().collect());
        if let Err(e) = serde_json::from_value::<SipConfig>(one) {
            problems.push(format!("settings.{name}: {e}"));
        }
    }
    if secret.is_none_or(str::is_empty) {
        problems.push(
            "secret is missing: the password of settings.username on the PBX (stored encrypted, never shown)".to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut connection = fields.clone();
    connection.remove("numbers");
    let mut cfg: SipConfig = serde_json::from_value(Value::Object(connection))
        .map_err(|e| vec![format!("settings: {e}")])?;
    cfg.account = Some(account.to_owned());
    cfg.password = secret.unwrap_or_default().to_owned();
    let problems = cfg.problems();
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// Problems with the settings of a new telephony account of `provider`
/// (empty when valid; only `sip` accounts have settings the host uses).
pub fn account_settings_problems(
    provider: &str,
    settings: &Value,
    secret: Option<&str>,
) -> Vec<String> {
    match provider {
        "sip" => account_sip_config("", settings, secret)
            .err()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `GET /api/v1/telephony`: the host's provider, and every telephony
/// account's connection by account id, with the host owning each SIP
/// connection when several hosts share the database.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    /// The host's own provider (what readiness reports).
    #[serde(flatten)]
    pub host: ProviderStatus,
    /// Connection of each telephony account.
    pub accounts: BTreeMap<String, ProviderStatus>,
    /// The id of the host that answered.
    pub host_id: String,
    /// The owning host of each SIP connection (`host`: the host's own
    /// provider; otherwise the telephony account id).
    pub owners: BTreeMap<String, String>,
}

/// How the numbers of a `sip` telephony account are served.
enum Serving {
    /// By the account's own connection.
    Own(SipProvider),
    /// Nowhere: its connection could not start (the reason).
    Failed(String),
    /// By the host's provider: settings stored before they were checked
    /// that describe no SIP connection (the reason), served as before.
    Shared(String),
}

/// A `sip` telephony account's connection, with what it was started from
/// and whether this host owns it (registers and subscribes) or keeps it
/// for click-to-call only.
struct Connection {
    line: Line,
    serving: Serving,
    owner: bool,
}

#[derive(Default)]
struct State {
    /// Every monitored number (from licensing).
    monitored: BTreeSet<E164>,
    lines: Arc<Lines>,
    /// Connections of the `sip` accounts, by account id.
    connections: HashMap<String, Connection>,
    /// Monitored numbers per account that has no connection of its own.
    counts: HashMap<String, usize>,
    /// Owners of the SIP connections (see [`super::ownership`]); `None`
    /// until the first claim, and always on one host: everything is ours.
    owners: Option<BTreeMap<String, super::ownership::Owner>>,
    /// This host's id.
    me: String,
}

impl State {
    /// Whether this host runs `connection` in full.
    fn owns(&self, connection: &str) -> bool {
        match &self.owners {
            None => true,
            // The host's own provider takes part only when it is SIP.
            Some(o) => match o.get(connection) {
                Some(o) => o.host == self.me,
                None => connection == super::ownership::HOST_CONNECTION,
            },
        }
    }

    fn connection_of(&self, number: &E164) -> Option<(&String, &Serving)> {
        let account = self.lines.numbers.get(number)?;
        self.connections.get(account).map(|c| (account, &c.serving))
    }
}

/// The host's provider plus one connection per `sip` telephony account.
pub struct TelephonyHub {
    global: Arc<dyn Provider>,
    events: mpsc::Sender<CallEvent>,
    state: Mutex<State>,
    /// Non-public ranges the accounts' PBXs may be in (the operator's).
    allowed: Vec<IpNet>,
}

/// Resolves the PBX of a customer's account once and pins the address it
/// connects to, refusing a non-public one (the host's loopback, the
/// operator's private network, link-local metadata) unless the operator
/// allows its range: a customer must not make the host send SIP inside the
/// operator's network. The domain stays the name given, so the account's
/// address of record does not change.
async fn pin_server(mut cfg: SipConfig, allowed: &[IpNet]) -> Result<SipConfig, String> {
    let given = cfg.server.clone();
    let found: Vec<SocketAddr> = tokio::net::lookup_host(given.as_str())
        .await
        .map_err(|e| {
            format!("settings.server '{given}' does not resolve: {e}; check the PBX's name")
        })?
        .collect();
    let mut refused = None;
    for addr in &found {
        match crate::egress::refused(addr.ip(), allowed) {
            Some(kind) => {
                refused.get_or_insert(format!(
                    "settings.server '{given}' is {}, a {kind} address: telephony accounts connect to public PBXs only; give the PBX's public address, or an operator allows the range (telephony.allow_networks)",
                    addr.ip()
                ));
            }
            None => {
                if cfg.domain.is_empty() {
                    cfg.domain = cfg.domain();
                }
                cfg.server = addr.to_string();
                return Ok(cfg);
            }
        }
    }
    Err(refused.unwrap_or_else(|| format!("settings.server '{given}' resolves to no address")))
}

impl TelephonyHub {
    /// A hub around the host's own provider; the accounts' connections send
    /// their call events to `events`.
    pub fn new(global: Arc<dyn Provider>, events: mpsc::Sender<CallEvent>) -> Self {
        Self {
            global,
            events,
            state: Mutex::new(State::default()),
            allowed: Vec::new(),
        }
    }

    /// Lets the accounts' PBXs be in these non-public ranges too.
    pub fn allowing(mut self, allowed: Vec<IpNet>) -> Self {
        self.allowed = allowed;
        self
    }

    /// Follows the telephony accounts: starts a connection for each new
    /// `sip` account, restarts one whose settings or secret changed (and
    /// retries one that could not start), stops those of removed accounts,
    /// then hands every connection its numbers.
    pub async fn set_lines(&self, lines: Arc<Lines>) {
        let (stop, start) = {
            let mut st = self.state.lock();
            let mut stop = Vec::new();
            let owned: BTreeSet<String> = st
                .connections
                .keys()
                .filter(|id| st.owns(id))
                .cloned()
                .collect();
            st.connections.retain(|id, c| {
                let keep = lines.accounts.get(id) == Some(&c.line)
                    && !matches!(c.serving, Serving::Failed(_))
                    && c.owner == owned.contains(id);
                if !keep && let Serving::Own(p) = &c.serving {
                    stop.push(p.clone());
                }
                keep
            });
            let start: Vec<(String, Line, bool)> = lines
                .accounts
                .iter()
                .filter(|(id, l)| l.provider == "sip" && !st.connections.contains_key(*id))
                .map(|(id, l)| (id.clone(), l.clone(), st.owns(id)))
                .collect();
            (stop, start)
        };
        for p in stop {
            p.stop();
        }
        let mut started = Vec::new();
        for (id, line, owner) in start {
            let serving = self.connect(&id, &line, owner).await;
            started.push((
                id,
                Connection {
                    line,
                    serving,
                    owner,
                },
            ));
        }
        let mut st = self.state.lock();
        st.connections.extend(started);
        st.lines = lines;
        self.distribute(&mut st);
    }

    async fn connect(&self, id: &str, line: &Line, owner: bool) -> Serving {
        let secret = match &line.secret {
            Ok(s) => s.as_deref(),
            Err(why) => return Serving::Failed(format!("telephony account '{id}': {why}")),
        };
        let cfg = match account_sip_config(id, &line.settings, secret) {
            // Another host's connection: this one only places calls.
            Ok(cfg) => SipConfig {
                register: cfg.register && owner,
                ..cfg
            },
            Err(problems) => {
                tracing::warn!(account = %id, problems = ?problems, "telephony account has no usable SIP settings; its numbers go through the host's provider");
                return Serving::Shared(format!(
                    "no connection of its own, its numbers go through the host's telephony provider: {}",
                    problems.join("; ")
                ));
            }
        };
        let cfg = match pin_server(cfg, &self.allowed).await {
            Ok(cfg) => cfg,
            Err(why) => {
                tracing::warn!(account = %id, "{why}");
                return Serving::Failed(format!("telephony account '{id}': {why}"));
            }
        };
        match SipProvider::start(cfg, self.events.clone()).await {
            Ok(p) => {
                tracing::info!(account = %id, owner, "SIP connection of telephony account started");
                Serving::Own(p)
            }
            Err(e) => {
                tracing::warn!(account = %id, error = %e, "SIP connection of telephony account not started");
                Serving::Failed(format!(
                    "the SIP connection of telephony account '{id}' could not start: {e}"
                ))
            }
        }
    }

    /// Hands every connection the monitored numbers of its account, and the
    /// host's provider all the others.
    fn distribute(&self, st: &mut State) {
        let mut own: HashMap<&str, BTreeSet<E164>> = st
            .connections
            .iter()
            .filter(|(_, c)| matches!(c.serving, Serving::Own(_)))
            .map(|(id, _)| (id.as_str(), BTreeSet::new()))
            .collect();
        let owned: BTreeSet<String> = st
            .connections
            .iter()
            .filter(|(_, c)| c.owner)
            .map(|(id, _)| id.clone())
            .collect();
        let mut global = BTreeSet::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for n in &st.monitored {
            match st.connection_of(n) {
                Some((id, Serving::Own(_))) => {
                    if let Some(set) = own.get_mut(id.as_str()) {
                        set.insert(n.clone());
                    }
                }
                Some((id, Serving::Failed(_))) => *counts.entry(id.clone()).or_default() += 1,
                _ => {
                    if let Some(id) = st.lines.numbers.get(n) {
                        *counts.entry(id.clone()).or_default() += 1;
                    }
                    global.insert(n.clone());
                }
            }
        }
        for (id, numbers) in own {
            if let Some(Connection {
                serving: Serving::Own(p),
                ..
            }) = st.connections.get(id)
            {
                // Another host's connection monitors nothing here.
                p.set_monitored(if owned.contains(id) {
                    numbers
                } else {
                    BTreeSet::new()
                });
            }
        }
        let host = st.owns(super::ownership::HOST_CONNECTION);
        self.global.set_owner(host);
        self.global
            .set_monitored(if host { global } else { BTreeSet::new() });
        st.counts = counts;
    }

    /// The connection status of telephony account `id` of `provider`: its
    /// own connection's, or the host's provider's as far as it serves the
    /// account's numbers (nothing about other customers).
    pub fn account_status(&self, id: &str, provider: &str) -> ProviderStatus {
        let st = self.state.lock();
        let count = st.counts.get(id).copied().unwrap_or(0);
        let shared = |why: Option<String>| {
            let host = self.global.status();
            ProviderStatus {
                kind: host.kind,
                connected: host.connected,
                monitored: count,
                active: if host.connected { count } else { 0 },
                last_error: why.or_else(|| {
                    (!host.connected).then(|| {
                        "the host's telephony connection is down; the operator has been told"
                            .to_owned()
                    })
                }),
                registration: None,
            }
        };
        if let Some(c) = st.connections.get(id)
            && !c.owner
            && matches!(c.serving, Serving::Own(_))
        {
            // The owning host's view, as it last reported it.
            let reported = st
                .owners
                .as_ref()
                .and_then(|o| o.get(id))
                .and_then(|o| o.status.clone())
                .and_then(|v| serde_json::from_value::<ReportedStatus>(v).ok());
            return match reported {
                Some(r) => r.into_status(),
                None => ProviderStatus {
                    kind: "sip",
                    connected: false,
                    monitored: 0,
                    active: 0,
                    last_error: Some(
                        "the connection is being taken over by another host".to_owned(),
                    ),
                    registration: None,
                },
            };
        }
        match st.connections.get(id).map(|c| &c.serving) {
            Some(Serving::Own(p)) => {
                let mut s = p.status();
                s.last_error = s.last_error.map(unreachable_alike);
                s
            }
            Some(Serving::Failed(why)) => ProviderStatus {
                kind: "sip",
                connected: false,
                monitored: count,
                active: 0,
                last_error: Some(why.clone()),
                registration: None,
            },
            Some(Serving::Shared(why)) => shared(Some(why.clone())),
            // Just created: its connection is being started.
            None if provider == "sip" && !st.lines.accounts.contains_key(id) => ProviderStatus {
                kind: "sip",
                connected: false,
                monitored: 0,
                active: 0,
                last_error: None,
                registration: None,
            },
            None => shared(None),
        }
    }

    /// Several hosts share the database: until this host claims a SIP
    /// connection it runs none in full (see [`TelephonyHub::set_owners`]).
    pub fn share_ownership(&self, me: &str) {
        let mut st = self.state.lock();
        st.me = me.to_owned();
        st.owners.get_or_insert_with(BTreeMap::new);
    }

    /// Applies the owners of the SIP connections (from
    /// [`super::ownership::Ownership::claim`]): connections this host
    /// gained are restarted in full (register, subscribe), those it lost
    /// become dial-only.
    pub async fn set_owners(&self, me: &str, owners: BTreeMap<String, super::ownership::Owner>) {
        let lines = {
            let mut st = self.state.lock();
            st.me = me.to_owned();
            st.owners = Some(owners);
            st.lines.clone()
        };
        self.set_lines(lines).await;
    }

    /// The status of each SIP connection this host owns, for the other
    /// hosts (JSON of its [`ProviderStatus`]).
    pub fn owned_statuses(&self) -> BTreeMap<String, Value> {
        let st = self.state.lock();
        let mut out = BTreeMap::new();
        for (id, c) in &st.connections {
            if c.owner
                && let Serving::Own(p) = &c.serving
            {
                let mut s = p.status();
                s.last_error = s.last_error.map(unreachable_alike);
                out.insert(id.clone(), serde_json::to_value(s).unwrap_or_default());
            }
        }
        if st.owns(super::ownership::HOST_CONNECTION) {
            out.insert(
                super::ownership::HOST_CONNECTION.to_owned(),
                serde_json::to_value(self.global.status()).unwrap_or_default(),
            );
        }
        out
    }

    /// The owner of each SIP connection as last claimed; this host's id.
    pub fn owners(&self) -> (String, BTreeMap<String, String>) {
        let st = self.state.lock();
        let owners = st
            .owners
            .iter()
            .flatten()
            .map(|(c, o)| (c.clone(), o.host.clone()))
            .collect();
        (st.me.clone(), owners)
    }

    /// The connection status of every telephony account, by id.
    pub fn account_statuses(&self) -> BTreeMap<String, ProviderStatus> {
        let lines = self.state.lock().lines.clone();
        lines
            .accounts
            .iter()
            .map(|(id, line)| (id.clone(), self.account_status(id, &line.provider)))
            .collect()
    }
}

/// A [`ProviderStatus`] as another host reported it.
#[derive(serde::Deserialize)]
struct ReportedStatus {
    connected: bool,
    monitored: usize,
    active: usize,
    last_error: Option<String>,
    registration: Option<super::sip::RegistrationStatus>,
}

impl ReportedStatus {
    fn into_status(self) -> ProviderStatus {
        ProviderStatus {
            kind: "sip",
            connected: self.connected,
            monitored: self.monitored,
            active: self.active,
            last_error: self.last_error,
            registration: self.registration,
        }
    }
}

impl Provider for TelephonyHub {
    fn kind(&self) -> &'static str {
        self.global.kind()
    }

    fn set_monitored(&self, numbers: BTreeSet<E164>) {
        let mut st = self.state.lock();
        st.monitored = numbers;
        self.distribute(&mut st);
    }

    fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>> {
        let via: Result<Option<SipProvider>, String> =
            match self.state.lock().connection_of(&req.phone) {
                Some((_, Serving::Own(p))) => Ok(Some(p.clone())),
                Some((_, Serving::Failed(why))) => Err(why.clone()),
                _ => Ok(None),
            };
        match via {
            Ok(Some(p)) => p.originate(req),
            Ok(None) => self.global.originate(req),
            Err(why) => Box::pin(async move { Err(TelephonyError::Unavailable(why)) }),
        }
    }

    /// The host's own provider (a customer's connection does not make the
    /// host unready).
    fn status(&self) -> ProviderStatus {
        self.global.status()
    }

    /// Every connection leaves its PBX (unregisters), the host's and each
    /// account's, at the same time.
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let mut all = vec![self.global.shutdown()];
        for c in self.state.lock().connections.values() {
            if let Serving::Own(p) = &c.serving {
                all.push(p.shutdown());
            }
        }
        Box::pin(async move {
            futures::future::join_all(all).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refused_and_silent_pbxs_read_the_same() {
        let refused = unreachable_alike(
            "cannot open a TCP connection to the PBX at 192.0.2.1:5061: Connection refused (os error 111)".into(),
        );
        let silent = unreachable_alike("no answer to OPTIONS from 192.0.2.1:5061".into());
        assert_eq!(refused, silent);
        assert!(!refused.contains("refused (os"));
        let creds = "the PBX at x refused the credentials".to_owned();
        assert_eq!(unreachable_alike(creds.clone()), creds);
    }

    #[tokio::test]
    async fn an_accounts_pbx_is_pinned_to_a_permitted_address_and_keeps_its_domain() {
        let cfg = |server: &str| SipConfig {
            server: server.into(),
            ..SipConfig::default()
        };
        let err = pin_server(cfg("localhost:5060"), &[]).await.unwrap_err();
        assert!(
            err.contains("loopback") && err.contains("telephony.allow_networks"),
            "{err}"
        );
        let err = pin_server(cfg("10.1.2.3:5060"), &[]).await.unwrap_err();
        assert!(err.contains("private"), "{err}");
        let err = pin_server(cfg("[fd00::1]:5060"), &[]).await.unwrap_err();
        assert!(err.contains("unique local"), "{err}");

        let allowed = crate::egress::networks("t", &["127.0.0.0/8".into()]).unwrap();
        let pinned = pin_server(cfg("localhost:5070"), &allowed).await.unwrap();
        assert_eq!(pinned.server, "127.0.0.1:5070");
        assert_eq!(
            pinned.domain, "localhost",
            "the address of record keeps the name"
        );
        let public = pin_server(cfg("192.0.2.10:5060"), &[]).await;
        assert!(public.is_err(), "documentation range is not public");
        let public = pin_server(cfg("8.8.8.8:5060"), &[]).await.unwrap();
        assert_eq!(
            (public.server.as_str(), public.domain.as_str()),
            ("8.8.8.8:5060", "8.8.8.8")
        );
    }

    fn problems(settings: Value, secret: Option<&str>) -> String {
        account_settings_problems("sip", &settings, secret).join("\n")
    }

    #[test]
    fn sip_settings_errors_name_the_field_and_the_fix() {
        let cases = [
            (
                json!({"server": "pbx.example.ch:5060", "registrar": "x"}),
                "settings.registrar: unknown field `registrar`, expected one of `server`",
            ),
            (
                json!({"server": "pbx.example.ch:5060", "expires": "soon"}),
                "settings.expires: invalid type",
            ),
            (
                json!({"server": "pbx.example.ch:5060", "password": "pw"}),
                "settings.password: give the PBX password as \"secret\"",
            ),
            (
                json!({"username": "leansync"}),
                "settings.server is missing",
            ),
            (
                json!({"server": "pbx.example.ch"}),
                "settings.server: 'pbx.example.ch' is not the PBX address as host:port",
            ),
            (
                json!({"server": "pbx:5060", "user_format": "x"}),
                "settings.user_format: 'x' is unknown",
            ),
            (
                json!({"server": "pbx:5060", "numbers": "044"}),
                "settings.numbers: give the account's numbers as a list",
            ),
        ];
        for (settings, expected) in cases {
            let found = problems(settings.clone(), Some("pw"));
            assert!(found.contains(expected), "{settings}: {found}");
        }
        let no_secret = problems(json!({"server": "pbx:5060"}), None);
        assert!(no_secret.starts_with("secret is missing"), "{no_secret}");
        // The numbers to import may come with a SIP account too; other
        // providers keep their free-form settings.
        let numbers = json!({"server": "pbx:5060", "numbers": ["044 123 45 67"]});
        assert_eq!(problems(numbers, Some("pw")), "");
        assert!(account_settings_problems("sim", &json!({"numbers": []}), None).is_empty());
    }

    #[test]
    fn a_valid_account_takes_its_password_from_the_secret() {
        let cfg = account_sip_config(
            "tel_1",
            &json!({"server": "pbx.example.ch:5060", "username": "muster", "expires": 300}),
            Some("s3cret"),
        )
        .unwrap();
        assert_eq!(
            (cfg.username.as_str(), cfg.password.as_str(), cfg.expires),
            ("muster", "s3cret", 300)
        );
        assert_eq!(
            cfg.setting("server"),
            "settings.server of telephony account 'tel_1'"
        );
    }

    /// The host's provider, recording what reaches it.
    #[derive(Default)]
    struct Recorder {
        monitored: Mutex<BTreeSet<E164>>,
        originated: Mutex<Vec<E164>>,
    }

    impl Provider for Recorder {
        fn kind(&self) -> &'static str {
            "sim"
        }
        fn set_monitored(&self, numbers: BTreeSet<E164>) {
            *self.monitored.lock() = numbers;
        }
        fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>> {
            self.originated.lock().push(req.phone);
            Box::pin(async { Ok("sim-1".into()) })
        }
        fn status(&self) -> ProviderStatus {
            let monitored = self.monitored.lock().len();
            ProviderStatus {
                kind: "sim",
                connected: true,
                monitored,
                active: monitored,
                last_error: None,
                registration: None,
            }
        }
    }

    fn line(provider: &str, settings: Value) -> Line {
        Line {
            customer_id: "cus_1".into(),
            provider: provider.into(),
            settings,
            secret: Ok(Some("pw".into())),
        }
    }

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    #[tokio::test]
    async fn numbers_go_to_the_connection_of_their_account_the_rest_to_the_host() {
        let host = Arc::new(Recorder::default());
        // The account's "PBX" is on loopback, which the operator allows here.
        let loopback = crate::egress::networks("t", &["127.0.0.0/8".into()]).unwrap();
        let hub = TelephonyHub::new(host.clone(), mpsc::channel(8).0).allowing(loopback);
        // Nothing listens there: the connection exists, nothing answers.
        let own = json!({"server": "127.0.0.1:9", "bind": "127.0.0.1:0", "keepalive_secs": 0});
        let mut lines = Lines::default();
        lines
            .accounts
            .insert("tel_sip".into(), line("sip", own.clone()));
        lines
            .accounts
            .insert("tel_sim".into(), line("sim", json!({})));
        lines
            .accounts
            .insert("tel_old".into(), line("sip", json!({"registrar": "x"})));
        lines.numbers.insert(n("+41441111111"), "tel_sip".into());
        lines.numbers.insert(n("+41442222222"), "tel_sim".into());
        lines.numbers.insert(n("+41443333333"), "tel_old".into());
        hub.set_lines(Arc::new(lines.clone())).await;
        let all: BTreeSet<E164> = [
            "+41441111111",
            "+41442222222",
            "+41443333333",
            "+41444444444",
        ]
        .into_iter()
        .map(n)
        .collect();
        hub.set_monitored(all);

        let to_host: Vec<String> = host
            .monitored
            .lock()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(to_host, ["+41442222222", "+41443333333", "+41444444444"]);
        let sip = hub.account_status("tel_sip", "sip");
        assert_eq!((sip.kind, sip.monitored), ("sip", 1));
        let sim = hub.account_status("tel_sim", "sim");
        assert_eq!((sim.kind, sim.monitored, sim.connected), ("sim", 1, true));
        let old = hub.account_status("tel_old", "sip");
        assert_eq!(old.monitored, 1);
        assert!(
            old.last_error
                .unwrap()
                .contains("settings.registrar: unknown field")
        );
        assert_eq!(
            hub.status().monitored,
            3,
            "readiness is the host's provider"
        );

        // Click-to-call from the account's number uses its connection.
        hub.originate(Originate {
            phone: n("+41441111111"),
            destination: n("+41791234567"),
        })
        .await
        .unwrap();
        hub.originate(Originate {
            phone: n("+41442222222"),
            destination: n("+41791234567"),
        })
        .await
        .unwrap();
        assert_eq!(*host.originated.lock(), [n("+41442222222")]);

        // Changed settings: a new connection; a removed account: stopped.
        lines.accounts.insert(
            "tel_sip".into(),
            line(
                "sip",
                json!({"server": "127.0.0.1:10", "bind": "127.0.0.1:0", "keepalive_secs": 0}),
            ),
        );
        hub.set_lines(Arc::new(lines.clone())).await;
        assert_eq!(hub.account_status("tel_sip", "sip").monitored, 1);
        let new = hub.account_status("tel_new", "sip");
        assert_eq!((new.kind, new.connected), ("sip", false), "starting");
        lines.accounts.remove("tel_sip");
        hub.set_lines(Arc::new(lines)).await;
        assert!(host.monitored.lock().contains(&n("+41441111111")));
        assert!(!hub.account_statuses().contains_key("tel_sip"));
    }

    #[test]
    fn a_line_never_prints_its_secret() {
        let l = line("sip", json!({}));
        let shown = format!("{l:?}");
        assert!(
            shown.contains("****") && !shown.contains("\"pw\""),
            "{shown}"
        );
    }
}
