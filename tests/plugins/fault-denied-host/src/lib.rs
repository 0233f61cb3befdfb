//! GETs the configured `url` although its manifest only asks for
//! api.example.com, and reports the host's answer as a permanent error.

use leansync_plugin_api::*;

struct Denied;

impl Connector for Denied {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        let cfg: serde_json::Value = config()?;
        let url = cfg["url"].as_str().unwrap_or("http://127.0.0.1:9/");
        match http::Request::get(url).send() {
            Ok(r) => Err(permanent(format!(
                "unexpectedly reached {url}: HTTP {}",
                r.status
            ))),
            Err(e) => Err(permanent(e)),
        }
    }
}

export!(Denied);
