//! A complete connector in ~25 lines: logs every ringing call and POSTs
//! missed calls as JSON to the URL in the installation's config.

use leansync_plugin_api::*;

struct Hello;

impl Connector for Hello {
    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        let caller = event.caller.clone().unwrap_or_else(|| "anonymous".into());
        match event.state {
            CallState::Ringing => log::info(&format!("{caller} is calling {}", event.licensed_number)),
            CallState::Missed => {
                let cfg: serde_json::Value = config()?;
                let url = cfg["missed_calls_url"].as_str().unwrap_or_default();
                http::Request::post(url)
                    .header("idempotency-key", &delivery.idempotency_key)
                    .json(&serde_json::json!({ "missed_call_from": caller, "to": event.licensed_number }))
                    .send()
                    .map_err(http::transport_error)?
                    .error_for_status()?;
            }
            _ => {}
        }
        Ok(())
    }
}

export!(Hello);
