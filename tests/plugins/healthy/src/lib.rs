//! Records each delivered event in key-value state (so tests can count
//! deliveries) and echoes webhook requests as JSON.

use leansync_plugin_api::*;

struct Healthy;

impl Connector for Healthy {
    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        let key = format!("seen:{}", event.event_id);
        kv::set(&key, delivery.idempotency_key.as_bytes(), Some(3600)).map_err(permanent)
    }

    fn handle_http(request: HttpRequest) -> HttpResponse {
        json_response(
            200,
            &serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": String::from_utf8_lossy(&request.body),
            }),
        )
    }
}

export!(Healthy);
