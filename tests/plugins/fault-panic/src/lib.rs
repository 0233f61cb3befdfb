//! Panics with a recognisable message on every event.

use leansync_plugin_api::*;

struct Panic;

impl Connector for Panic {
    fn on_call_event(event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        panic!("fault-panic refuses call {}", event.call_id)
    }
}

export!(Panic);
