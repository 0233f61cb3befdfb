//! A vendor's REST API as the connectors use it: JSON in and out, the
//! installation's credentials on every request, and the vendor's answers
//! turned into connector errors an admin can act on (which config field to
//! fix, how long to wait after a rate limit).

use leansync_plugin_api::http::{self, Request, Response};
use leansync_plugin_api::{ConnectorError, permanent, retryable};
use serde_json::Value;

/// One vendor API of one installation.
pub struct Api {
    /// Vendor name for messages, e.g. "HubSpot".
    pub vendor: &'static str,
    /// Base URL without trailing slash, e.g. `https://api.hubapi.com`.
    pub base: String,
    headers: Vec<(String, String)>,
    auth: Auth,
    credentials: &'static str,
}

/// How requests authenticate.
enum Auth {
    /// Only through [`Api::with_header`].
    Headers,
    /// `Authorization: Bearer`.
    Bearer(String),
    /// `Authorization: Basic`.
    Basic(String, String),
}

impl Api {
    /// An API at `base` (the `base_url` config field). `credentials` tells
    /// an admin which config fields to fix when the vendor rejects them,
    /// e.g. "set `access_token` to a private app token with ...".
    pub fn new(vendor: &'static str, base: &str, credentials: &'static str) -> Self {
        Self {
            vendor,
            base: base.trim_end_matches('/').to_string(),
            headers: Vec::new(),
            auth: Auth::Headers,
            credentials,
        }
    }

    /// Sends `name: value` on every request (e.g. an API key header).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Authenticates with `Authorization: Bearer {token}`.
    pub fn bearer(mut self, token: &str) -> Self {
        self.auth = Auth::Bearer(token.into());
        self
    }

    /// Authenticates with HTTP Basic.
    pub fn basic(mut self, user: &str, password: &str) -> Self {
        self.auth = Auth::Basic(user.into(), password.into());
        self
    }

    /// A request to `path` (starting with `/`) carrying the API's headers.
    pub fn request(&self, method: &str, path: &str) -> Request {
        let mut req = Request::new(method, &format!("{}{path}", self.base))
            .header("accept", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match &self.auth {
            Auth::Headers => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic(user, password) => req.basic_auth(user, password),
        }
    }

    /// `GET path`, JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, ConnectorError> {
        self.send(self.request("GET", path))
    }

    /// `POST path` with a JSON body, JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ConnectorError> {
        self.send(self.request("POST", path).json(body))
    }

    /// `POST path` creating a contact; `read` finds it in the answer.
    pub fn create(
        &self,
        path: &str,
        body: &Value,
        read: impl FnOnce(&Value) -> Option<crate::Match>,
    ) -> Result<crate::Match, ConnectorError> {
        let created = self.post(path, body)?;
        read(&created).ok_or_else(|| {
            permanent(format!(
                "{} answered POST {path} without the new record's id: {created}",
                self.vendor
            ))
        })
    }

    /// Sends a request built with [`Api::request`]; a non-2xx answer
    /// becomes the matching connector error.
    pub fn send(&self, req: Request) -> Result<Value, ConnectorError> {
        let resp = req.send().map_err(|e| {
            let e = format!("{} API at {}: {e}", self.vendor, self.base);
            http::transport_error(e)
        })?;
        let what = format!("{} {}", req.method, path_of(&req.url));
        if !(200..300).contains(&resp.status) {
            return Err(self.status_error(&what, &resp));
        }
        if resp.body.is_empty() {
            return Ok(Value::Null);
        }
        resp.json().map_err(|e| {
            permanent(format!(
                "{} answered {what} with something other than its API's JSON ({e}); check `base_url` ({})",
                self.vendor, self.base
            ))
        })
    }

    fn status_error(&self, what: &str, resp: &Response) -> ConnectorError {
        let vendor = self.vendor;
        let status = resp.status;
        let said: String = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(300)
            .collect();
        match status {
            401 => permanent(format!(
                "{vendor} rejected the credentials (HTTP 401 on {what}: {said}); {}",
                self.credentials
            )),
            403 => permanent(format!(
                "{vendor} refused {what} (HTTP 403: {said}): the credentials lack a permission; {}",
                self.credentials
            )),
            404 => permanent(format!(
                "{vendor} has no {what} (HTTP 404: {said}); check `base_url` ({})",
                self.base
            )),
            429 | 503 => retryable(
                format!(
                    "{vendor} is rate limiting or unavailable (HTTP {status} on {what}: {said})"
                ),
                retry_after_ms(resp),
            ),
            408 | 500..=599 => retryable(
                format!("{vendor} failed (HTTP {status} on {what}: {said})"),
                None,
            ),
            _ => permanent(format!("{vendor} rejected {what} (HTTP {status}: {said})")),
        }
    }
}

/// How long the vendor asked us to wait, from the headers vendors use:
/// `Retry-After` (seconds), `RateLimit-Reset` / `X-RateLimit-Reset`
/// (seconds until the window resets, or a Unix time), HubSpot's
/// `X-HubSpot-RateLimit-Interval-Milliseconds` (the window length).
pub fn retry_after_ms(resp: &Response) -> Option<u64> {
    let number = |name: &str| {
        resp.header(name)
            .and_then(|v| v.split([',', ';']).next())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = number("retry-after") {
        return Some(secs * 1000);
    }
    if let Some(reset) = number("ratelimit-reset").or_else(|| number("x-ratelimit-reset")) {
        // Some vendors send the reset moment as a Unix time.
        let secs = if reset > 1_000_000_000 {
            reset.saturating_sub(now_secs())
        } else {
            reset
        };
        return Some(secs * 1000);
    }
    number("x-hubspot-ratelimit-interval-milliseconds")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    // The query may carry search terms (phone numbers); keep it out of errors.
    path.split('?').next().unwrap_or(path)
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON id (number or string) as a string.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A non-empty string field.
pub fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
