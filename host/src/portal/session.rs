//! Portal sessions (shared by the hosts of one database), CSRF tokens and
//! cookie helpers (the sign-in back-off is in [`super::throttle`]).
//!
//! A session id is 256 random bits from the OS; the cookie carrying it is
//! `HttpOnly`, `SameSite=Lax` and `Secure` when the request came over TLS.
//! Every session has its own CSRF token that each form sends back in a
//! hidden field. Sessions expire 12 hours after sign-in.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::licensing::Actor;
use crate::store::shared::Shared;

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
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// Who is signed in.
    pub actor: Actor,
    /// The CSRF token every form of this session must send.
    pub csrf: String,
    /// When it ends (Unix ms).
    pub expires_ms: i64,
    /// When its password was last proven (Unix ms): sign-in, or a password
    /// change made in this session. A password changed after that (on any
    /// host) ends the session.
    pub since_ms: i64,
    /// A message to show on the next page (kind, text).
    pub flash: Option<(String, String)>,
}

/// Sessions (cheap to clone), in the hosts' shared state: on PostgreSQL a
/// session made on one host works on every other, behind any load
/// balancer. Stored under a hash of the id, so whoever reads the database
/// cannot take over a session.
#[derive(Clone)]
pub struct Sessions {
    state: Shared,
}

fn now_ms() -> i64 {
    crate::call::now_ms() as i64
}

fn key(id: &str) -> String {
    use sha2::Digest;
    format!(
        "session:{}",
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    )
}

impl Sessions {
    /// Sessions in `state`.
    pub fn new(state: Shared) -> Self {
        Self { state }
    }

    /// Changes the live session `id` (nothing when there is none); it
    /// keeps its end.
    async fn change<R>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Session) -> R,
    ) -> anyhow::Result<Option<R>> {
        let now = now_ms();
        self.state
            .modify(&[&key(id)], |v: &mut [Session]| {
                let s = &mut v[0];
                if s.expires_ms <= now {
                    *s = Session::default();
                    return (None, 0);
                }
                (Some(f(s)), s.expires_ms)
            })
            .await
    }

    /// Starts a session for `actor`; returns its id.
    pub async fn create(&self, actor: Actor) -> anyhow::Result<String> {
        let id = random_token();
        let now = now_ms();
        let session = Session {
            actor,
            csrf: random_token(),
            expires_ms: now + SESSION_TTL.as_millis() as i64,
            since_ms: now,
            flash: None,
        };
        self.state
            .update(&[&key(&id)], SESSION_TTL, |v: &mut [Session]| {
                v[0] = session
            })
            .await?;
        Ok(id)
    }

    /// The live session with that id.
    pub async fn get(&self, id: &str) -> Option<Session> {
        match self.state.read::<Session>(&[&key(id)]).await {
            Ok(mut v) => v.pop().filter(|s| s.expires_ms > now_ms()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read portal sessions");
                None
            }
        }
    }

    /// Takes the pending flash message of a session.
    pub async fn take_flash(&self, id: &str) -> Option<(String, String)> {
        match self.get(id).await {
            Some(s) if s.flash.is_some() => self
                .change(id, |s| s.flash.take())
                .await
                .ok()
                .flatten()
                .flatten(),
            _ => None,
        }
    }

    /// Sets the flash message shown on the next page.
    pub async fn flash(&self, id: &str, kind: &str, text: &str) {
        let flash = Some((kind.to_owned(), text.to_owned()));
        if let Err(e) = self.change(id, |s| s.flash = flash).await {
            tracing::warn!(error = %e, "cannot keep the portal message for the next page");
        }
    }

    /// Ends a session.
    pub async fn remove(&self, id: &str) {
        if let Err(e) = self.state.remove(&key(id)).await {
            tracing::warn!(error = %e, "cannot end a portal session");
        }
    }

    /// After a password change in session `id`: it continues as freshly
    /// signed in; every other session of the account ends on its next
    /// request, on every host (see `Licensing::recheck`).
    pub async fn password_changed(&self, id: &str) {
        if let Err(e) = self.change(id, |s| s.since_ms = now_ms()).await {
            tracing::warn!(error = %e, "cannot renew the portal session after a password change");
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

    #[tokio::test]
    async fn sessions_have_random_ids_and_tokens() {
        let s = Sessions::new(Shared::memory());
        let a = s.create(actor()).await.unwrap();
        let b = s.create(actor()).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = s.get(&a).await.unwrap();
        assert_ne!(sa.csrf, s.get(&b).await.unwrap().csrf);
        s.flash(&a, "ok", "saved").await;
        assert_eq!(s.take_flash(&a).await, Some(("ok".into(), "saved".into())));
        assert_eq!(s.take_flash(&a).await, None, "a message is shown once");
        assert_eq!(
            s.get(&a).await.unwrap().expires_ms,
            sa.expires_ms,
            "a message does not extend the session"
        );
        s.remove(&a).await;
        assert!(s.get(&a).await.is_none());
        s.flash(&a, "ok", "late").await;
        assert!(
            s.get(&a).await.is_none(),
            "a message does not revive an ended session"
        );
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
