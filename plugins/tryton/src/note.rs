//! The journal note text and the marker that makes retries idempotent.

use leansync_plugin_api::time;
use leansync_plugin_api::{CallEvent, CallState, Direction};

/// The tag in every note of one call's outcome; a retried delivery looks
/// for it before writing the note again.
pub fn marker(event: &CallEvent) -> String {
    format!("[leansync {}]", event.call_id)
}

/// The note for a finished call, e.g.
/// `Answered inbound call from +41791234567 to +41441234567, duration 2:05, 2026-11-25 22:48 UTC [leansync sim-1]`.
pub fn text(event: &CallEvent) -> String {
    let outcome = match event.state {
        CallState::Missed => "Missed",
        _ => "Answered",
    };
    let direction = match event.direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Internal => "internal",
    };
    let from = event.caller.as_deref().unwrap_or("anonymous");
    let mut s = format!("{outcome} {direction} call from {from} to {}", event.callee);
    if let Some(d) = event
        .duration_secs
        .filter(|_| event.state != CallState::Missed)
    {
        s.push_str(&format!(", duration {}", time::duration(d)));
    }
    if let Some(who) = event
        .answered_by
        .as_deref()
        .filter(|_| event.state != CallState::Missed)
    {
        s.push_str(&format!(", answered by {who}"));
    }
    s.push_str(&format!(
        ", {} {}",
        time::readable_utc(event.started_at_ms),
        marker(event)
    ));
    s
}

/// The number of the other party: the caller of an inbound call, the
/// destination of an outbound one.
pub fn counterpart(event: &CallEvent) -> Option<&str> {
    match event.direction {
        Direction::Outbound => Some(event.callee.as_str()),
        _ => event.caller.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: CallState, direction: Direction) -> CallEvent {
        CallEvent {
            call_id: "sim-1".into(),
            event_id: "sim-1:x".into(),
            direction,
            state,
            caller: Some("+41791234567".into()),
            callee: "+41441234567".into(),
            licensed_number: "+41441234567".into(),
            installation_id: "i".into(),
            started_at_ms: 1_764_110_914_123,
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: Some(125),
            contact: None,
            answered_by: None,
        }
    }

    #[test]
    fn answered_and_missed_calls_read_well() {
        assert_eq!(
            text(&event(CallState::Ended, Direction::Inbound)),
            "Answered inbound call from +41791234567 to +41441234567, duration 2:05, 2025-11-25 22:48 UTC [leansync sim-1]"
        );
        assert_eq!(
            text(&event(CallState::Missed, Direction::Inbound)),
            "Missed inbound call from +41791234567 to +41441234567, 2025-11-25 22:48 UTC [leansync sim-1]"
        );
        let mut by = event(CallState::Ended, Direction::Inbound);
        by.answered_by = Some("201".into());
        assert!(
            text(&by).contains("duration 2:05, answered by 201, "),
            "{}",
            text(&by)
        );
    }

    #[test]
    fn the_counterpart_depends_on_the_direction() {
        assert_eq!(
            counterpart(&event(CallState::Ended, Direction::Inbound)),
            Some("+41791234567")
        );
        assert_eq!(
            counterpart(&event(CallState::Ended, Direction::Outbound)),
            Some("+41441234567")
        );
        let mut anon = event(CallState::Missed, Direction::Inbound);
        anon.caller = None;
        assert_eq!(counterpart(&anon), None);
        assert!(text(&anon).contains("from anonymous"));
    }
}
