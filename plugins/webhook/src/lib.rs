//! `webhook`: POSTs each call event as JSON to the configured URL, signed
//! with HMAC-SHA256 so the receiver can trust it.

use hmac::{Hmac, Mac};
use leansync_plugin_api::*;
use serde::Deserialize;
use sha2::Sha256;

#[derive(Deserialize)]
struct Config {
    url: String,
    #[serde(default)]
    states: Vec<String>,
}

struct Webhook;

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Ringing => "ringing",
        CallState::Answered => "answered",
        CallState::Ended => "ended",
        CallState::Missed => "missed",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Internal => "internal",
    }
}

impl Connector for Webhook {
    fn validate_config(config: serde_json::Value) -> Result<(), Vec<ConfigIssue>> {
        let url = config["url"].as_str().unwrap_or_default();
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(())
        } else {
            Err(vec![ConfigIssue {
                field: "/url".into(),
                message: format!(
                    "'{url}' is not an http(s) URL; enter the full receiver URL, e.g. https://app.example.com/leansync"
                ),
            }])
        }
    }

    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        let cfg: Config = config()?;
        let state = state_name(event.state);
        if !cfg.states.is_empty() && !cfg.states.iter().any(|s| s == state) {
            return Ok(());
        }
        let mut body = serde_json::json!({
            "idempotency_key": delivery.idempotency_key,
            "attempt": delivery.attempt,
            "event": {
                "call_id": event.call_id,
                "event_id": event.event_id,
                "state": state,
                "direction": direction_name(event.direction),
                "caller": event.caller,
                "callee": event.callee,
                "licensed_number": event.licensed_number,
                "installation_id": event.installation_id,
                "started_at_ms": event.started_at_ms,
                "answered_at_ms": event.answered_at_ms,
                "ended_at_ms": event.ended_at_ms,
                "duration_secs": event.duration_secs,
                "contact": event.contact.as_ref().map(|c| serde_json::json!({
                    "name": c.name,
                    "organisation": c.organisation,
                    "deep_link": c.deep_link,
                    "source": c.source,
                })),
            }
        });
        // Since connector API 1.1.0; absent when the telephony did not say.
        if let Some(dev) = &event.answered_by {
            body["event"]["answered_by"] = dev.as_str().into();
        }
        let body = body.to_string();
        let mut request = http::Request::post(&cfg.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &delivery.idempotency_key)
            .header("x-leansync-timestamp", &event.started_at_ms.to_string());
        if let Some(secret) = secret("secret") {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|e| permanent(format!("bad signing secret: {e}")))?;
            mac.update(body.as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            request = request.header("x-leansync-signature", &format!("sha256={sig}"));
        }
        request
            .body(body.into_bytes())
            .send()
            .map_err(http::transport_error)?
            .error_for_status()?;
        Ok(())
    }
}

export!(Webhook);
