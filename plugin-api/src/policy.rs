//! The call-handling options every journaling connector offers, with the same
//! config keys everywhere so the portal and the READMEs read alike:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `default_country` | `"CH"` | country of numbers stored in national form |
//! | `shared_number` | `"all"` | several contacts share a number: log to `all`, the `first`, or `none` |
//! | `log_internal_calls` | `false` | journal calls between the company's own numbers |
//! | `own_numbers` | `[]` | the company's own numbers (any format): never resolved to a contact, calls from them count as internal |
//!
//! Put `#[serde(flatten)] policy: CallPolicy` into the connector's config
//! struct and copy the four properties into the manifest's schema.

use serde::Deserialize;

use crate::phone::{E164, Region};
use crate::{CallEvent, Direction};

/// What to do when several contacts share the caller's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedNumber {
    /// Journal the call on every matching contact.
    #[default]
    All,
    /// Journal it on the first match only (the app's order).
    First,
    /// Journal nothing when the number is ambiguous.
    None,
}

/// The installation's call-handling options (see the module docs).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallPolicy {
    /// Country of numbers stored in national form.
    #[serde(default)]
    pub default_country: Region,
    /// Rule for a number shared by several contacts.
    #[serde(default)]
    pub shared_number: SharedNumber,
    /// Journal internal calls too.
    #[serde(default)]
    pub log_internal_calls: bool,
    /// The company's own numbers, as typed by the admin.
    #[serde(default)]
    pub own_numbers: Vec<String>,
}

impl CallPolicy {
    /// Whether `number` (any format) is one of the company's own numbers.
    pub fn is_own_number(&self, number: &str) -> bool {
        let Ok(n) = E164::parse(number, &self.default_country) else {
            return false;
        };
        self.own_numbers
            .iter()
            .any(|own| E164::parse(own, &self.default_country).is_ok_and(|o| o == n))
    }

    /// Whether the call is internal: marked so by the host, from one of the
    /// company's own numbers, or from an extension too short to be external.
    pub fn is_internal(&self, event: &CallEvent) -> bool {
        if event.direction == Direction::Internal {
            return true;
        }
        match &event.caller {
            Some(caller) => {
                self.is_own_number(caller)
                    || matches!(
                        E164::parse(caller, &self.default_country),
                        Err(crate::phone::PhoneError::Extension(_))
                    )
            }
            None => false,
        }
    }

    /// Whether the call belongs in the app's journal at all.
    pub fn should_journal(&self, event: &CallEvent) -> bool {
        self.log_internal_calls || !self.is_internal(event)
    }

    /// The number to resolve for `number`, or `None` when it must not be
    /// resolved (one of the company's own numbers, an extension, garbage).
    pub fn resolvable(&self, number: &str) -> Option<E164> {
        if self.is_own_number(number) {
            return None;
        }
        E164::parse(number, &self.default_country).ok()
    }

    /// Applies the shared-number rule to the contacts found for one number,
    /// in the app's order.
    pub fn pick<T>(&self, mut matches: Vec<T>) -> Vec<T> {
        match self.shared_number {
            SharedNumber::All => matches,
            SharedNumber::First => {
                matches.truncate(1);
                matches
            }
            SharedNumber::None if matches.len() > 1 => Vec::new(),
            SharedNumber::None => matches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallState;

    fn event(direction: Direction, caller: Option<&str>) -> CallEvent {
        CallEvent {
            call_id: "c".into(),
            event_id: "c:ended".into(),
            direction,
            state: CallState::Ended,
            caller: caller.map(Into::into),
            callee: "+41441234567".into(),
            licensed_number: "+41441234567".into(),
            installation_id: "i".into(),
            started_at_ms: 0,
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
            contact: None,
            answered_by: None,
        }
    }

    fn policy(json: serde_json::Value) -> CallPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_are_swiss_log_all_skip_internal() {
        let p = policy(serde_json::json!({}));
        assert_eq!(p.default_country, Region::switzerland());
        assert_eq!(p.shared_number, SharedNumber::All);
        assert!(!p.log_internal_calls);
        let bad =
            serde_json::from_value::<CallPolicy>(serde_json::json!({ "default_country": "XX" }));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("not a known default country")
        );
    }

    #[test]
    fn shared_number_rule() {
        let all = policy(serde_json::json!({ "shared_number": "all" }));
        let first = policy(serde_json::json!({ "shared_number": "first" }));
        let none = policy(serde_json::json!({ "shared_number": "none" }));
        assert_eq!(all.pick(vec![1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(first.pick(vec![1, 2, 3]), vec![1]);
        assert_eq!(none.pick(vec![1, 2, 3]), Vec::<i32>::new());
        assert_eq!(none.pick(vec![7]), vec![7], "a unique match is not shared");
        assert_eq!(first.pick(Vec::<i32>::new()), Vec::<i32>::new());
    }

    #[test]
    fn internal_calls_are_filtered_unless_asked_for() {
        let p =
            policy(serde_json::json!({ "own_numbers": ["044 123 45 00", "0041 44 123 45 01"] }));
        assert!(p.is_internal(&event(Direction::Internal, Some("+41791234567"))));
        assert!(p.is_internal(&event(Direction::Inbound, Some("+41441234500"))));
        assert!(p.is_internal(&event(Direction::Inbound, Some("+41441234501"))));
        assert!(p.is_internal(&event(Direction::Inbound, Some("221"))));
        assert!(!p.is_internal(&event(Direction::Inbound, Some("+41791234567"))));
        assert!(
            !p.is_internal(&event(Direction::Inbound, None)),
            "anonymous is external"
        );
        assert!(!p.should_journal(&event(Direction::Internal, Some("+41791234567"))));
        assert!(p.should_journal(&event(Direction::Inbound, Some("+41791234567"))));
        let logging = policy(serde_json::json!({ "log_internal_calls": true }));
        assert!(logging.should_journal(&event(Direction::Internal, Some("+41791234567"))));
    }

    #[test]
    fn own_numbers_are_never_resolved() {
        let p = policy(serde_json::json!({ "own_numbers": ["044 123 45 00"] }));
        assert_eq!(p.resolvable("+41441234500"), None);
        assert_eq!(p.resolvable("221"), None);
        assert_eq!(
            p.resolvable("+41791234567").map(|n| n.to_string()),
            Some("+41791234567".into())
        );
    }
}
