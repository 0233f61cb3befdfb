//! GETs the configured `url`; Ok on 2xx, otherwise the error.

use leansync_plugin_api::*;

struct Probe;

impl Connector for Probe {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        let cfg: serde_json::Value = config()?;
        let url = cfg["url"]
            .as_str()
            .ok_or_else(|| permanent("config needs `url`"))?;
        http::Request::get(url)
            .send()
            .map_err(http::transport_error)?
            .error_for_status()?;
        Ok(())
    }
}

export!(Probe);
