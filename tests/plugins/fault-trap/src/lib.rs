//! Traps with `unreachable` on every event.

use leansync_plugin_api::*;

struct Trap;

impl Connector for Trap {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        core::arch::wasm32::unreachable()
    }
}

export!(Trap);
