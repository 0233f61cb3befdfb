//! Accepts every event and does nothing: the benchmark's unit of work.

use leansync_plugin_api::*;

struct Noop;

impl Connector for Noop {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        Ok(())
    }
}

export!(Noop);
