//! Allocates 1 MiB blocks until memory runs out.

use leansync_plugin_api::*;

struct Oom;

impl Connector for Oom {
    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

export!(Oom);
