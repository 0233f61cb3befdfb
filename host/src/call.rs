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

impl Contact {
    /// Drops a deep link a browser would run rather than open (`javascript:`,
    /// `data:`, ... or one hiding its scheme behind spaces or control
    /// characters); returns why, for the log. Links to an app's own scheme
    /// (`tryton://...`) stay.
    pub fn drop_unsafe_link(&mut self) -> Option<String> {
        let link = self.deep_link.as_deref()?;
        let why = link_refusal(link)?;
        let out = format!(
            "deep_link '{}' dropped: {why}",
            link.chars().take(80).collect::<String>()
        );
        self.deep_link = None;
        Some(out)
    }
}

/// Why `link` may not be a contact's deep link; `None` if it may.
fn link_refusal(link: &str) -> Option<&'static str> {
    if link.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("a link may not contain spaces or control characters (percent-encode them)");
    }
    let Some((scheme, _)) = link.split_once(':') else {
        return Some("a link needs a scheme such as https://");
    };
    let well_formed = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !well_formed {
        return Some("a link needs a scheme such as https://");
    }
    match scheme.to_ascii_lowercase().as_str() {
        "javascript" | "vbscript" | "data" | "blob" | "file" | "about" | "filesystem" => Some(
            "that scheme runs or reads content in the browser; use https:// or the app's own scheme",
        ),
        _ => None,
    }
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
    /// Who picked the call up (`Answered`, `Ended`), when the telephony
    /// reports it: the device contact or extension, e.g. `sip:201@pbx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(link: &str) -> Contact {
        Contact {
            name: "Anna".into(),
            organisation: None,
            deep_link: Some(link.into()),
            source: "crm".into(),
        }
    }

    #[test]
    fn links_a_browser_would_run_are_dropped_app_links_stay() {
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "java\tscript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
            "//evil.example/x",
            "no-scheme",
        ] {
            let mut c = contact(bad);
            assert!(c.drop_unsafe_link().is_some(), "{bad:?} kept");
            assert_eq!(c.deep_link, None);
        }
        for good in [
            "https://crm.example.ch/contacts/42",
            "http://127.0.0.1:8000/party/7",
            "tryton://erp.example.ch/db/model/party.party/7",
            "mailto:anna@example.ch",
        ] {
            let mut c = contact(good);
            assert_eq!(c.drop_unsafe_link(), None, "{good} dropped");
            assert_eq!(c.deep_link.as_deref(), Some(good));
        }
    }
}
