//! Never returns from on-call-event.

use leansync_plugin_api::*;

struct Loop;

impl Connector for Loop {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Loop);
