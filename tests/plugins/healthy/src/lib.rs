//! Records each delivered event in key-value state (so tests can count
//! deliveries), shows each ringing call on the installation's screens
//! (push-to-screen), and echoes webhook requests as JSON, with the installation's
//! config and how many requests this instance has served (always 1: the host
//! never reuses an instance, so no state crosses calls or installations).

use std::sync::atomic::{AtomicU32, Ordering};

use leansync_plugin_api::*;

static SERVED: AtomicU32 = AtomicU32::new(0);

struct Healthy;

impl Connector for Healthy {
    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        if event.state == CallState::Ringing {
            push_to_screen(&event);
        }
        let key = format!("seen:{}", event.event_id);
        kv::set(&key, delivery.idempotency_key.as_bytes(), Some(3600)).map_err(permanent)
    }

    fn handle_http(request: HttpRequest) -> HttpResponse {
        // `POST …/dial {"from": …, "to": …}`: a click-to-call by the plugin.
        if request.path.ends_with("/dial") {
            let body: serde_json::Value =
                serde_json::from_slice(&request.body).unwrap_or_default();
            let from = body["from"].as_str().unwrap_or_default();
            let to = body["to"].as_str().unwrap_or_default();
            let answer = match place_call(from, to) {
                Ok(id) => serde_json::json!({ "call_id": id }),
                Err(e) => serde_json::json!({ "error": e }),
            };
            return json_response(200, &answer);
        }
        json_response(
            200,
            &serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": String::from_utf8_lossy(&request.body),
                "served_by_this_instance": SERVED.fetch_add(1, Ordering::Relaxed) + 1,
                "config": config::<serde_json::Value>().ok(),
            }),
        )
    }
}

export!(Healthy);
