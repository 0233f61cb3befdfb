//! Portal sessions (in memory), CSRF tokens and cookie helpers (the
//! sign-in back-off is in [`super::throttle`]).
//!
//! A session id is 256 random bits from the OS; the cookie carrying it is
//! `HttpOnly`, `SameSite=Lax` and `Secure` when the request came over TLS.
//! Every session has its own CSRF token that each form sends back in a
//! hidden field. Sessions expire 12 hours after sign-in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use parking_lot::Mutex;

use crate::licensing::Actor;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "ls_session";
/// Name of the cookie carrying the CSRF token of the sign-in form.
pub const LOGIN_CSRF_COOKIE: &str = "ls_login_csrf";
/// Name of the language cookie.
pub const LANG_COOKIE: &str = "ls_lang";
/// How long a session lives after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// 256 random bits as 64 hex digits.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
    hex::encode(b)
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// One signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who is signed in.
    pub actor: Actor,
    /// The CSRF token every form of this session must send.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    /// When its password was last proven (Unix ms): sign-in, or a password
    /// change made in this session. A password changed after that (on any
    /// host) ends the session.
    pub since_ms: i64,
    /// A message to show on the next page (kind, text).
    pub flash: Option<(String, String)>,
}

/// Sessions (cheap to clone).
#[derive(Clone, Default)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Session>>>,
}

fn now_ms() -> i64 {
    crate::call::now_ms() as i64
}

impl Sessions {
    /// Starts a session for `actor`; returns its id.
    pub fn create(&self, actor: Actor) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut map = self.map.lock();
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                actor,
                csrf: random_token(),
                expires: now + SESSION_TTL,
                since_ms: now_ms(),
                flash: None,
            },
        );
        id
    }

    /// The live session with that id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Takes the pending flash message of a session.
    pub fn take_flash(&self, id: &str) -> Option<(String, String)> {
        self.map.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Sets the flash message shown on the next page.
    pub fn flash(&self, id: &str, kind: &str, text: &str) {
        if let Some(s) = self.map.lock().get_mut(id) {
            s.flash = Some((kind.to_owned(), text.to_owned()));
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }

    /// After a password change in session `id`: every other session of
    /// its account on this host ends, this one continues as freshly signed
    /// in (other hosts end theirs on their next request, see
    /// `Licensing::recheck`).
    pub fn password_changed(&self, id: &str) {
        let mut map = self.map.lock();
        let Some(account) = map.get(id).map(|s| s.actor.account_id.clone()) else {
            return;
        };
        map.retain(|sid, s| sid == id || s.actor.account_id != account);
        if let Some(s) = map.get_mut(id) {
            s.since_ms = now_ms();
        }
    }
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// Whether the request reached us over TLS (directly or via a proxy that
/// says so in `X-Forwarded-Proto` / `Forwarded`).
pub fn is_tls(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    if uri.scheme_str() == Some("https") {
        return true;
    }
    let hdr = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    if let Some(p) = hdr("x-forwarded-proto")
        && p.split(',').next().map(str::trim) == Some("https")
    {
        return true;
    }
    if let Some(f) = hdr("forwarded")
        && f.split([';', ',']).any(|p| p.trim() == "proto=https")
    {
        return true;
    }
    false
}

/// A `Set-Cookie` value for a portal cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/portal; HttpOnly; SameSite=Lax");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> Actor {
        Actor {
            account_id: "acc_1".into(),
            name: "a@b.ch".into(),
            customer_id: None,
            impersonal: false,
        }
    }

    #[test]
    fn sessions_have_random_ids_and_tokens() {
        let s = Sessions::default();
        let a = s.create(actor());
        let b = s.create(actor());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = s.get(&a).unwrap();
        assert_ne!(sa.csrf, s.get(&b).unwrap().csrf);
        s.remove(&a);
        assert!(s.get(&a).is_none());
    }

    #[test]
    fn a_password_change_ends_the_other_sessions_of_that_account() {
        let s = Sessions::default();
        let (a, b) = (s.create(actor()), s.create(actor()));
        let mut other = actor();
        other.account_id = "acc_2".into();
        let c = s.create(other);
        let before = s.get(&a).unwrap().since_ms;
        std::thread::sleep(Duration::from_millis(5));
        s.password_changed(&a);
        assert!(s.get(&a).unwrap().since_ms > before);
        assert!(s.get(&b).is_none());
        assert!(s.get(&c).is_some());
    }

    #[test]
    fn tls_detection() {
        let mut h = HeaderMap::new();
        let uri: axum::http::Uri = "/portal/".parse().unwrap();
        assert!(!is_tls(&h, &uri));
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(is_tls(&h, &uri));
        assert!(set_cookie("a", "b", None, true).ends_with("; Secure"));
    }
}
