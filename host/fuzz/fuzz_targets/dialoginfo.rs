//! Arbitrary bytes into the dialog-info parser, and whatever it accepts into
//! one tracker. An input is split at NUL bytes into successive NOTIFY bodies,
//! so sequences of documents (versions, full/partial, repeats) are explored
//! too. Fails on any panic, and when the tracker outgrows its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own source file, not the leansync-host crate: that crate
// pulls in wasmtime, which takes long to build with sanitizer
// instrumentation, for code this target never reaches.
#[path = "../../src/telephony/dialoginfo.rs"]
#[allow(dead_code)]
mod dialoginfo;

use dialoginfo::{Tracker, parse};

fuzz_target!(|data: &[u8]| {
    let mut tracker = Tracker::new();
    for (i, chunk) in data.split(|&b| b == 0).enumerate() {
        // The SIP provider hands the parser the body decoded the same way.
        let body = String::from_utf8_lossy(chunk);
        if let Ok(Some(info)) = parse(&body) {
            let _ = tracker.observe(&info, i as u64 * 1000);
            assert!(tracker.len() <= Tracker::MAX_DIALOGS);
        }
    }
});
