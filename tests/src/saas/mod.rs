//! Local stand-ins for the SaaS apps the bundled CRM connectors talk to
//! (HubSpot, Pipedrive, bexio, Zendesk). Each follows its vendor's
//! published API: the same paths, JSON shapes, authentication and error
//! bodies, and rate-limit answers (429 with the vendor's headers). What the
//! connector creates is stored so a test can assert it.
//!
//! The plumbing every fake shares lives here: start on a free port, record
//! requests, check credentials, answer scripted 429s. A vendor module only
//! describes its API ([`Vendor`]) and how a test talks about it ([`Saas`]).

pub mod bexio;
pub mod hubspot;
pub mod pipedrive;
pub mod zendesk;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A vendor API as a fake serves it.
pub trait Vendor: Send + Sync + 'static {
    /// Whether the request carries the credentials the fake accepts,
    /// checked the way the vendor checks them.
    fn authorized(&self, headers: &HeaderMap, query: &str) -> bool;
    /// The vendor's answer to missing or wrong credentials.
    fn unauthorized(&self) -> Response;
    /// The vendor's rate-limit answer, asking to wait `secs`.
    fn throttled(&self, secs: u64) -> Response;
    /// The endpoints the connector uses.
    fn routes(&self) -> Router<Fake>;
}

/// How tests drive a connector against its fake, the same way for every
/// vendor.
pub trait Saas: Vendor + Default {
    /// The connector (plugin folder) name.
    const PLUGIN: &'static str;
    /// Path of the contact search endpoint (to count lookups).
    const SEARCH_PATH: &'static str;
    /// The installation config pointing the connector at `url`.
    fn config(url: &str) -> Value;
    /// The secret config fields with the credentials the fake accepts.
    fn secrets() -> Vec<(&'static str, &'static str)>;
    /// The config field of the credentials an admin would have to fix.
    const CREDENTIAL_FIELD: &'static str;
    /// The only host the shipped manifest asks for.
    const API_HOST: &'static str;
    /// Where the connector should link contact `id` in the vendor's web UI.
    fn deep_link(fake: &Fake, id: &str) -> String;
    /// Stores a contact (a person at `org`) with one phone number written
    /// as `phone`; returns its id.
    fn seed(fake: &Fake, first: &str, last: &str, org: &str, phone: &str) -> String;
    /// The call records the connector created, in a common form.
    fn journal(fake: &Fake) -> Vec<Journaled>;
    /// Contacts the connector created (not seeded ones).
    fn created_contacts(fake: &Fake) -> Vec<Value>;
}

/// One call record in the app, whatever the vendor calls it.
#[derive(Debug, Clone)]
pub struct Journaled {
    /// Ids of the contacts it is linked to.
    pub contacts: Vec<String>,
    /// Marked as answered (else missed / no answer).
    pub answered: bool,
    /// Talk time, where the vendor has a field for it.
    pub duration_secs: Option<u64>,
    /// Title and body text, as a person reads them in the app.
    pub text: String,
    /// The record as the connector sent it.
    pub raw: Value,
}

/// What a fake holds.
#[derive(Default)]
pub struct Data {
    /// Contacts in the vendor's shape (seeded and created).
    pub contacts: Vec<Value>,
    /// Other objects by kind (`calls`, `notes`, `tickets`, ...), in order.
    pub created: Vec<(String, Value)>,
    /// `METHOD /path?query` of every request, throttled and refused included.
    pub requests: Vec<String>,
    /// Remaining scripted 429s, each with its wait in seconds.
    throttle: VecDeque<u64>,
    next_id: u64,
    /// Extra per-vendor state (idempotency keys, relations, ...).
    pub extra: HashMap<String, Value>,
}

impl Data {
    /// A fresh numeric id.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        100 + self.next_id
    }

    /// The objects created of `kind`.
    pub fn created(&self, kind: &str) -> Vec<Value> {
        self.created
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A running fake app on 127.0.0.1 (cheap to clone; handlers get one).
#[derive(Clone)]
pub struct Fake {
    /// Where it listens.
    pub addr: SocketAddr,
    data: Arc<Mutex<Data>>,
    vendor: Arc<dyn Vendor>,
}

impl Fake {
    /// Starts `vendor`'s fake on a free port.
    pub async fn start(vendor: impl Vendor) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let vendor: Arc<dyn Vendor> = Arc::new(vendor);
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            data: Default::default(),
            vendor: vendor.clone(),
        };
        let app = vendor
            .routes()
            .layer(middleware::from_fn_with_state(fake.clone(), gate))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fake's state.
    pub fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }

    /// Answers the next `times` requests with the vendor's 429, asking to
    /// wait `secs`.
    pub fn throttle(&self, times: usize, secs: u64) {
        self.data()
            .throttle
            .extend(std::iter::repeat_n(secs, times));
    }

    /// How many requests went to paths starting with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> usize {
        self.data()
            .requests
            .iter()
            .filter(|r| {
                r.split_once(' ')
                    .is_some_and(|(_, p)| p.starts_with(prefix))
            })
            .count()
    }
}

/// Records the request, then answers a scripted 429 or a credentials
/// failure the vendor's way, or lets the endpoint handle it.
async fn gate(State(fake): State<Fake>, req: Request, next: Next) -> Response {
    // Read the whole request first, as the vendors' front ends do: an
    // early answer while the client still sends its body breaks the
    // connection instead of delivering the 401 or 429.
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return reply(
            413,
            &[],
            serde_json::json!({ "error": "request too large" }),
        );
    };
    let req = Request::from_parts(parts, axum::body::Body::from(body));
    let query = req.uri().query().unwrap_or_default().to_string();
    let throttled = {
        let mut data = fake.data();
        data.requests
            .push(format!("{} {}", req.method(), req.uri()));
        data.throttle.pop_front()
    };
    if let Some(secs) = throttled {
        return fake.vendor.throttled(secs);
    }
    if !fake.vendor.authorized(req.headers(), &query) {
        return fake.vendor.unauthorized();
    }
    next.run(req).await
}

/// A JSON response with a status and extra headers.
pub fn reply(status: u16, headers: &[(&str, String)], body: Value) -> Response {
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (k, v) in headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// The value of `Authorization` if it uses `scheme` (`Bearer`, `Basic`).
pub fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest.trim())
}

/// A string field of a JSON object, or "".
pub fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
