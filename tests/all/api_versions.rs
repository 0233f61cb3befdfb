//! Connector API versions side by side: a component built against 1.0.0
//! before 1.1.0 existed (a committed binary, never rebuilt) loads and
//! behaves exactly as before on a host that links 1.0.0 and 1.1.0, while the
//! same connector rebuilt against 1.1.0 sees the new field; a manifest
//! asking for a major version the host lacks is refused, naming both.

use leansync_host::call::{CallEvent, CallState};
use leansync_host::plugins::Delivery;
use leansync_tests::plugins::{built, installation, repo_root, ringing, runtime, test_limits};
use leansync_tests::receiver::Receiver;

fn fixture() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/connector-1.0.0/webhook")
}

/// The JSON body each webhook component POSTs for one answered event.
async fn delivered(
    dir: &std::path::Path,
    scratch: &std::path::Path,
    ev: &CallEvent,
) -> (String, serde_json::Value) {
    let app = Receiver::start().await;
    let rt = runtime(scratch, test_limits());
    let p = rt
        .install(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let version = p.api_version.to_string();
    let inst = installation(
        "webhook",
        serde_json::json!({ "url": format!("{}/calls", app.url()) }),
        &["127.0.0.1"],
    );
    let delivery = Delivery {
        idempotency_key: "k-1".into(),
        attempt: 1,
    };
    rt.on_call_event(&inst, ev, None, &delivery).await.unwrap();
    let got = app.received();
    assert_eq!(got.len(), 1, "{got:?}");
    (version, serde_json::from_slice(&got[0].body).unwrap())
}

#[tokio::test]
async fn a_1_0_0_component_behaves_as_before_beside_1_1_0() {
    let scratch = tempfile::tempdir().unwrap();
    let mut ev = ringing("sim-versions-1");
    ev.state = CallState::Answered;
    ev.answered_at_ms = Some(ev.started_at_ms + 3_000);
    ev.answered_by = Some("sip:201@pbx.example".into());
    let (old_version, old) = delivered(&fixture(), &scratch.path().join("a"), &ev).await;
    let (new_version, new) = delivered(&built("webhook"), &scratch.path().join("b"), &ev).await;
    assert_eq!(old_version, "1.0.0");
    assert_eq!(new_version, "1.1.0");

    // The 1.0.0 guest gets exactly the 1.0.0 record: no trace of the new field.
    let old_event = old["event"].as_object().unwrap();
    assert!(!old_event.contains_key("answered_by"), "{old}");
    assert_eq!(old["event"]["state"], "answered");
    assert_eq!(old["event"]["caller"], "+41791234567");
    assert_eq!(old["idempotency_key"], "k-1");
    // The 1.1.0 build sees who answered; everything else is identical.
    assert_eq!(new["event"]["answered_by"], "sip:201@pbx.example", "{new}");
    let mut new_event = new["event"].as_object().unwrap().clone();
    new_event.remove("answered_by");
    assert_eq!(&new_event, old_event);
}

#[tokio::test]
async fn a_manifest_asking_for_a_major_version_the_host_lacks_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = leansync_tests::plugins::install("webhook", scratch.path());
    leansync_tests::plugins::edit_manifest(&dir, "api", "\"^2\"");
    let rt = runtime(scratch.path(), test_limits());
    let err = rt.load(&dir).err().expect("a ^2 manifest loaded");
    assert!(err.contains("requires connector API `^2`"), "{err}");
    assert!(err.contains("supports 1.0.0, 1.1.0"), "{err}");
    assert!(err.contains("change `api` in plugin.toml"), "{err}");
}
