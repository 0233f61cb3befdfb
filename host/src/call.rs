//! The normalised call event every telephony provider produces and every
//! connector consumes. Nothing outside `telephony` sees SIP or PBX types.

use serde::{Deserialize, Serialize};

use crate::number::E164;

/// Which way a call goes, seen from the licensed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Someone calls the monitored number.
    Inbound,
    /// The monitored number calls out (including click-to-call).
    Outbound,
    /// Both ends belong to the same customer.
    Internal,
}

/// Life-cycle state of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Ringing at the monitored number (or at the far end for outbound).
    Ringing,
    /// Picked up.
    Answered,
    /// An answered call was hung up.
    Ended,
    /// Stopped ringing without being answered.
    Missed,
}

impl CallState {
    /// True for the states after which nothing more happens to the call.
    pub fn is_final(self) -> bool {
        matches!(self, CallState::Ended | CallState::Missed)
    }

    /// Lower-case name as used in JSON, SSE and the WIT contract.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Ended => "ended",
            CallState::Missed => "missed",
        }
    }
}

/// A resolved contact for a phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Display name.
    pub name: String,
    /// Company, if known.
    pub organisation: Option<String>,
    /// Link that opens the record in the business app.
    pub deep_link: Option<String>,
    /// Connector that resolved it.
    pub source: String,
}

/// One normalised call event as produced by a telephony provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    /// Stable id of the call across its events (provider-scoped, e.g. the
    /// PBX dialog id prefixed with the provider name).
    pub call_id: String,
    /// Which way the call goes.
    pub direction: Direction,
    /// What happened.
    pub state: CallState,
    /// Calling number, `None` when withheld.
    pub caller: Option<E164>,
    /// Called number (for outbound: the destination).
    pub callee: E164,
    /// The monitored number this event was observed on.
    pub monitored: E164,
    /// When the call started ringing, Unix epoch milliseconds.
    pub started_at_ms: u64,
    /// When it was answered.
    pub answered_at_ms: Option<u64>,
    /// When it ended or was missed.
    pub ended_at_ms: Option<u64>,
    /// Talk time in whole seconds for `Ended`.
    pub duration_secs: Option<u32>,
}

impl CallEvent {
    /// Stable id of this event: the call id and its state.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.call_id, self.state.as_str())
    }
}

/// Current time in Unix epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
