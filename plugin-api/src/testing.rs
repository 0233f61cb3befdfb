//! Testing a connector natively with `cargo test`: [`TestHost`] plays the
//! host (config, secrets, key-value state, log) and the business app
//! (declared responses per method and path), runs connector code, and hands
//! back everything it did.
//!
//! ```ignore
//! use leansync_plugin_api::testing::{TestHost, event};
//!
//! let host = TestHost::new()
//!     .config(serde_json::json!({ "base_url": "https://api.example.com" }))
//!     .secret("api_token", "t0k")
//!     .respond("POST", "/calls", 201, "");
//! let (result, host) = host.run(|| App::on_call_event(event(CallState::Missed, Some("+4930123456"), "+4989123456"), delivery()));
//! assert!(result.is_ok());
//! assert_eq!(host.requests[0].url, "https://api.example.com/calls");
//! ```
//!
//! Only in native builds; a component talks to the real host. The real
//! sandbox (grants, deadline, memory cap) is `leansync plugin test`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::http::{Request, Response};
use crate::{CallEvent, CallState, Delivery, Direction, LogLevel};

/// The fake host and app a test runs connector code against.
#[derive(Debug, Default)]
pub struct TestHost {
    /// The installation's config (what [`crate::config`] reads).
    pub config: serde_json::Value,
    /// Its secrets.
    pub secrets: HashMap<String, String>,
    /// Key-value state, before and after.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Every request the connector sent, in order.
    pub requests: Vec<Request>,
    /// Every line it logged.
    pub log: Vec<(LogLevel, String)>,
    /// Click-to-calls it placed (from, to).
    pub placed_calls: Vec<(String, String)>,
    /// Calls it pushed to screens.
    pub screens: Vec<CallEvent>,
    routes: Vec<(String, String, Response)>,
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

impl TestHost {
    /// An empty host: config `{}`, no secrets, no state, no app responses.
    pub fn new() -> Self {
        Self {
            config: serde_json::json!({}),
            ..Default::default()
        }
    }

    /// Sets the installation's config.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Sets a secret.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// Sets a key-value entry.
    pub fn kv(mut self, key: &str, value: &[u8]) -> Self {
        self.kv.insert(key.into(), value.to_vec());
        self
    }

    /// The app answers `method` `path` (with a `?`, the query must match
    /// too) with `status` and `body`; a request nothing matches gets a 404.
    pub fn respond(self, method: &str, path: &str, status: u16, body: &str) -> Self {
        self.respond_with(method, path, status, Vec::new(), body)
    }

    /// [`TestHost::respond`] with JSON (and its content type).
    pub fn respond_json(
        self,
        method: &str,
        path: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Self {
        let headers = vec![("content-type".into(), "application/json".into())];
        self.respond_with(method, path, status, headers, &body.to_string())
    }

    /// [`TestHost::respond`] with headers (e.g. `retry-after`).
    pub fn respond_with(
        mut self,
        method: &str,
        path: &str,
        status: u16,
        headers: Vec<(String, String)>,
        body: &str,
    ) -> Self {
        let res = Response {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        };
        self.routes
            .push((method.to_ascii_uppercase(), path.into(), res));
        self
    }

    /// Runs `f` (connector code) against this host; returns its result and
    /// the host with everything the code did.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> (T, TestHost) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self));
        let out = f();
        let host = CURRENT
            .with(|c| c.borrow_mut().take())
            .expect("the test host is gone");
        (out, host)
    }

    /// The text of every logged line.
    pub fn log_text(&self) -> Vec<&str> {
        self.log.iter().map(|(_, m)| m.as_str()).collect()
    }
}

fn with<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let host = c.as_mut().expect(
            "connector code called the host outside a test host: run it inside TestHost::run",
        );
        f(host)
    })
}

/// The path (and query) of an absolute URL.
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

pub(crate) fn send(req: &Request) -> Result<Response, String> {
    if !req.url.starts_with("http://") && !req.url.starts_with("https://") {
        return Err(format!(
            "URL '{}' must start with http:// or https://",
            req.url
        ));
    }
    with(|h| {
        h.requests.push(req.clone());
        let full = path_of(&req.url);
        let path = full.split('?').next().unwrap_or(full);
        let found = h.routes.iter().find(|(m, p, _)| {
            m.eq_ignore_ascii_case(&req.method)
                && if p.contains('?') {
                    p == full
                } else {
                    p == path
                }
        });
        Ok(match found {
            Some((_, _, res)) => res.clone(),
            None => Response {
                status: 404,
                headers: Vec::new(),
                body: format!(
                    "the test host has no response for {} {full}; add one with TestHost::respond",
                    req.method
                )
                .into_bytes(),
            },
        })
    })
}

/// A call event in `state` of a call from `from` to `to` (inbound; the
/// licensed number is `to`), as the host would deliver it.
pub fn event(state: CallState, from: Option<&str>, to: &str) -> CallEvent {
    let answered = matches!(state, CallState::Answered | CallState::Ended);
    CallEvent {
        call_id: "test-call".into(),
        event_id: format!("test-call:{state:?}").to_lowercase(),
        direction: Direction::Inbound,
        state,
        caller: from.map(str::to_owned),
        callee: to.into(),
        licensed_number: to.into(),
        installation_id: "test-installation".into(),
        started_at_ms: 1_796_000_000_000,
        answered_at_ms: answered.then_some(1_796_000_005_000),
        ended_at_ms: matches!(state, CallState::Ended | CallState::Missed)
            .then_some(1_796_000_047_000),
        duration_secs: (state == CallState::Ended).then_some(42),
        contact: None,
        answered_by: None,
    }
}

/// Delivery metadata of a first attempt.
pub fn delivery() -> Delivery {
    Delivery {
        idempotency_key: "test-call:test-installation".into(),
        attempt: 1,
    }
}

/// The `host` import, answered by the current [`TestHost`].
pub(crate) mod imports {
    use super::with;
    use crate::{CallEvent, LogLevel};

    pub fn log(level: LogLevel, message: &str) {
        with(|h| h.log.push((level, message.to_owned())))
    }
    pub fn config() -> String {
        with(|h| h.config.to_string())
    }
    pub fn secret(name: &str) -> Option<String> {
        with(|h| h.secrets.get(name).cloned())
    }
    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        with(|h| h.kv.get(key).cloned())
    }
    pub fn kv_set(key: &str, value: &[u8], _ttl_secs: Option<u32>) -> Result<(), String> {
        with(|h| {
            h.kv.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }
    pub fn kv_delete(key: &str) {
        with(|h| {
            h.kv.remove(key);
        })
    }
    pub fn place_call(from: &str, to: &str) -> Result<String, String> {
        with(|h| {
            h.placed_calls.push((from.to_owned(), to.to_owned()));
            Ok(format!("test-call-{}", h.placed_calls.len()))
        })
    }
    pub fn push_to_screen(event: &CallEvent) {
        with(|h| h.screens.push(event.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_recorded_and_answered_by_route() {
        let host = TestHost::new()
            .config(serde_json::json!({ "base_url": "https://api.example.com" }))
            .respond_json("GET", "/contacts?phone=%2B41", 200, &serde_json::json!([1]));
        let ((a, b, cfg), host) = host.run(|| {
            let a = Request::get("https://api.example.com/contacts?phone=%2B41").send();
            let b = Request::post("https://api.example.com/other").send();
            crate::log::info("hello");
            (a, b, crate::config::<serde_json::Value>())
        });
        assert_eq!(a.unwrap().body, b"[1]");
        let b = b.unwrap();
        assert_eq!(b.status, 404);
        assert!(String::from_utf8_lossy(&b.body).contains("POST /other"));
        assert_eq!(cfg.unwrap()["base_url"], "https://api.example.com");
        assert_eq!(host.requests.len(), 2);
        assert_eq!(host.log_text(), ["hello"]);
    }
}
