//! Telephony providers behind one trait; the rest of the host sees only
//! [`crate::call::CallEvent`].

pub mod cli;
pub mod dialoginfo;
pub mod hub;
pub mod ownership;
pub mod sim;
pub mod sip;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::call::CallEvent;
use crate::config::TelephonyConfig;
use crate::number::E164;
pub use hub::{TelephonyHub, account_settings_problems};

/// A click-to-call request: ring `phone` first, then `destination`.
#[derive(Debug, Clone)]
pub struct Originate {
    /// The user's (licensed) number whose phone rings first.
    pub phone: E164,
    /// Whom to call.
    pub destination: E164,
}

/// Why telephony could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TelephonyError {
    /// The provider is not connected (registration failed, PBX down).
    #[error("telephony provider unavailable: {0}")]
    Unavailable(String),
    /// The request was refused by the PBX or the provider.
    #[error("call refused: {0}")]
    Refused(String),
}

/// Connection state shown to admins.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    /// `sim` or `sip`.
    pub kind: &'static str,
    /// Whether the provider can currently monitor and originate.
    pub connected: bool,
    /// Numbers currently monitored.
    pub monitored: usize,
    /// Of those, how many the PBX confirmed (active subscriptions).
    pub active: usize,
    /// Last error, e.g. wrong credentials.
    pub last_error: Option<String>,
    /// The provider's own registration at the PBX (`sip` with
    /// `register = true`; `null` otherwise).
    pub registration: Option<sip::RegistrationStatus>,
}

/// A telephony provider: turns PBX activity into [`CallEvent`]s (sent on the
/// channel it was built with) and originates click-to-calls.
pub trait Provider: Send + Sync + 'static {
    /// Provider kind.
    fn kind(&self) -> &'static str;
    /// Replaces the set of monitored numbers (follows the licenses).
    fn set_monitored(&self, numbers: BTreeSet<E164>);
    /// Starts a click-to-call; returns the call id.
    fn originate(&self, req: Originate) -> BoxFuture<'static, Result<String, TelephonyError>>;
    /// Current status.
    fn status(&self) -> ProviderStatus;
    /// Whether this host owns the provider's connection (registers at
    /// the PBX) or leaves that to another host of the database; only
    /// providers with a registration care.
    fn set_owner(&self, _owner: bool) {}
    /// Leaves the PBX cleanly before the host exits (e.g. unregisters).
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Builds the configured provider; events go to `events`.
pub fn build(
    config: &TelephonyConfig,
    events: mpsc::Sender<CallEvent>,
) -> anyhow::Result<Arc<dyn Provider>> {
    match config.provider.as_str() {
        "sim" => Ok(Arc::new(sim::SimProvider::new(events))),
        other => anyhow::bail!(
            "telephony provider '{other}' is not available in this build; set `telephony.provider = \"sim\"` (the SIP provider is tracked in issue 4)"
        ),
    }
}
