//! Registration of the watcher account (`telephony.sip.register`): the
//! host REGISTERs its Contact so the PBX knows where it is, like a phone.
//!
//! Digest-authenticated (401 or 407); refreshed at 80 % of the granted
//! expiry; after a failure tried again with backoff (1 s → 60 s), and at
//! once when the keepalive sees the PBX come back (a restarted PBX forgot
//! every registration). Refused credentials hold back registration and
//! subscriptions alike ([`super::AuthHold`]), so a wrong password never
//! floods the PBX. On shutdown the Contact is removed (`Expires: 0`).

use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{self as rsip, Header, Method};
use serde::Serialize;

use super::{
    Inner, RequestError, Series, credentials_accepted, credentials_refused, split_uris,
    wait_for_turn,
};

/// The watcher account's registration, as shown in the provider status.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RegistrationStatus {
    /// Whether the PBX holds our Contact now.
    pub registered: bool,
    /// The Contact registered (where the PBX reaches the host).
    pub contact: Option<String>,
    /// Seconds the PBX granted on the last REGISTER.
    pub expires_secs: Option<u32>,
    /// Why the last REGISTER failed.
    pub error: Option<String>,
}

/// How long an unregister on shutdown may take.
const UNREGISTER_WAIT: Duration = Duration::from_secs(3);

/// Keeps the watcher account registered until the provider shuts down,
/// then unregisters it.
pub(super) async fn registration_loop(inner: Arc<Inner>) {
    let cancel = inner.registration_cancel.lock().clone();
    let mut epoch = inner.epoch.subscribe();
    let mut backoff = Duration::from_secs(1);
    // One Call-ID for the registration's whole life (RFC 3261 10.2.4).
    let registrar = match rsip::Uri::try_from(format!("sip:{}", inner.cfg.domain())) {
        Ok(uri) => uri,
        Err(e) => {
            inner.registration.lock().error = Some(format!(
                "telephony.sip.domain '{}' is no SIP domain: {e}",
                inner.cfg.domain()
            ));
            return;
        }
    };
    let mut series = Series::new("ls-reg", Some(registrar));
    while wait_for_turn(&inner, &cancel).await {
        epoch.mark_unchanged();
        let outcome = tokio::select! {
            r = register(&inner, &mut series, inner.cfg.expires) => r,
            // A PBX that restarted meanwhile may never answer this one.
            _ = epoch.changed() => continue,
            _ = cancel.cancelled() => break,
        };
        let wait = match outcome {
            Ok((contact, granted)) => {
                backoff = Duration::from_secs(1);
                credentials_accepted(&inner);
                tracing::debug!(%contact, granted, "registered at the PBX");
                *inner.registration.lock() = RegistrationStatus {
                    registered: true,
                    contact: Some(contact),
                    expires_secs: Some(granted),
                    error: None,
                };
                Duration::from_secs(u64::from(granted.max(2)) * 8 / 10)
            }
            Err(e) => {
                let (message, wait) = match &e {
                    RequestError::Credentials(_) => {
                        let hold = credentials_refused(&inner);
                        // The hold does the waiting (in wait_for_turn).
                        (
                            format!("{e}; next attempt in {} s", hold.as_secs()),
                            Duration::ZERO,
                        )
                    }
                    _ => {
                        let wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        (format!("{e}; next attempt in {} s", wait.as_secs()), wait)
                    }
                };
                tracing::warn!(error = %e, retry_in = ?wait, "registration failed");
                let mut status = inner.registration.lock();
                status.registered = false;
                status.error = Some(message);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // The PBX came back (or the TCP connection moved): at once.
            _ = epoch.changed() => {}
            _ = cancel.cancelled() => break,
        }
    }
    if inner.registration.lock().registered {
        match tokio::time::timeout(UNREGISTER_WAIT, register(&inner, &mut series, 0)).await {
            Ok(Ok(_)) => tracing::info!("unregistered from the PBX"),
            Ok(Err(e)) => tracing::warn!(error = %e, "unregister failed"),
            Err(_) => tracing::warn!("no answer to the unregister"),
        }
        inner.registration.lock().registered = false;
    }
}

/// One REGISTER of our Contact for `expires` seconds (0 removes it),
/// answering digest challenges; returns the Contact and the granted expiry.
async fn register(
    inner: &Inner,
    series: &mut Series,
    expires: u32,
) -> Result<(String, u32), RequestError> {
    let cfg = &inner.cfg;
    let mut request = inner.request(Method::Register, series, cfg.me()?).await?;
    let contact = inner.contact().await?;
    inner.push_contact(&mut request).await?;
    request.headers.unique_push(Header::Expires(expires.into()));
    let resp = inner.send(request, series).await?;
    let code = resp.status_code.code();
    if !(200..300).contains(&code) {
        let hint = match code {
            403 | 404 => format!(
                ": check that telephony.sip.username '{}' is an account of the PBX that may register, or set telephony.sip.register = false (LEANSYNC_SIP_REGISTER=false)",
                cfg.username
            ),
            423 => format!(
                ": the PBX wants a longer registration (Min-Expires {}); raise telephony.sip.expires",
                resp.header_value("Min-Expires").unwrap_or_default()
            ),
            _ => String::new(),
        };
        return Err(RequestError::Failed(format!(
            "REGISTER of '{}' at {} answered {}{hint}",
            cfg.username, cfg.server, resp.status_code
        )));
    }
    let contacts: Vec<String> = resp
        .contact_headers()
        .iter()
        .flat_map(|c| split_uris(c.value()))
        .collect();
    let header = resp
        .expires_header()
        .and_then(|e| e.value().trim().parse().ok());
    let granted = granted_expiry(&contacts, header, &contact, expires);
    Ok((contact.to_string(), granted))
}

/// The expiry a registrar granted our `contact`: its `expires` parameter
/// in the 200's Contact list (which lists every binding of the account),
/// else the Expires header, else what was asked.
fn granted_expiry(
    contacts: &[String],
    header: Option<u32>,
    contact: &rsip::Uri,
    asked: u32,
) -> u32 {
    let ours = format!("@{}", contact.host_with_port);
    contacts
        .iter()
        .filter(|c| {
            c.split_once(&ours)
                .is_some_and(|(_, rest)| rest.starts_with(['>', ';']))
        })
        .find_map(|c| {
            c.split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .and_then(|v| v.trim().parse().ok())
        })
        .or(header)
        .unwrap_or(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_granted_expiry_is_the_one_of_our_own_contact() {
        let ours = rsip::Uri::try_from("sip:leansync@127.0.0.1:5071").unwrap();
        // Kamailio 5.6 lists every binding of the account in the 200.
        let contacts = [
            "<sip:leansync@127.0.0.1:6000>;expires=3000".to_owned(),
            "<sip:leansync@127.0.0.1:5071>;expires=600;received=\"sip:127.0.0.1:5071\"".to_owned(),
        ];
        assert_eq!(granted_expiry(&contacts, Some(900), &ours, 1200), 600);
        assert_eq!(granted_expiry(&contacts[..1], Some(900), &ours, 1200), 900);
        assert_eq!(granted_expiry(&[], None, &ours, 1200), 1200);
        let longer_port = ["<sip:leansync@127.0.0.1:50711>;expires=30".to_owned()];
        assert_eq!(granted_expiry(&longer_port, None, &ours, 1200), 1200);
    }
}
