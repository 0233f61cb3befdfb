//! Outbound HTTP: allowed only to hosts the manifest asks for AND the admin
//! granted; a denied request gets an error naming the host and the fix.

use leansync_host::plugins::{Delivery, InvokeError};
use leansync_tests::plugins::*;
use leansync_tests::receiver::Receiver;
use serde_json::json;

fn d() -> Delivery {
    Delivery {
        idempotency_key: "k".into(),
        attempt: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asked_and_granted_host_is_reached() {
    let receiver = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("http-probe", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let url = format!("{}/probe", receiver.url());
    let inst = installation("http-probe", json!({ "url": url }), &["127.0.0.1:*"]);
    rt.on_call_event(&inst, &ringing("c1"), None, &d())
        .await
        .unwrap();
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri.path(), "/probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_host_is_denied_with_the_grant_to_add() {
    let receiver = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("http-probe", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let inst = installation(
        "http-probe",
        json!({ "url": receiver.url() }),
        &["api.example.com"],
    );
    let err = rt
        .on_call_event(&inst, &ringing("c1"), None, &d())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "outbound HTTP to 127.0.0.1:{} denied",
            receiver.addr.port()
        )),
        "{msg}"
    );
    assert!(msg.contains("has not granted this host"), "{msg}");
    assert!(receiver.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_manifest_does_not_ask_for_is_denied_even_if_granted() {
    let receiver = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("fault-denied-host", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let inst = installation(
        "fault-denied-host",
        json!({ "url": receiver.url() }),
        &["*"],
    );
    let err = rt
        .on_call_event(&inst, &ringing("c1"), None, &d())
        .await
        .unwrap_err();
    let msg = match &err {
        InvokeError::Permanent(m) => m.clone(),
        other => panic!("expected the plugin to report the denial, got {other:?}"),
    };
    assert!(
        msg.contains("denied: plugin 'fault-denied-host' does not ask for it"),
        "{msg}"
    );
    assert!(msg.contains("capabilities.outbound-hosts"), "{msg}");
    assert!(receiver.received().is_empty());
}

/// A runtime whose operator allows no private range (the default), and an
/// http-probe that asks for every host, granted every host.
fn open_probe(
    scratch: &std::path::Path,
    url: &str,
) -> (
    leansync_host::plugins::PluginRuntime,
    std::sync::Arc<leansync_host::plugins::Installation>,
) {
    let dir = scratch.join("plugins");
    let folder = install("http-probe", &dir);
    edit_manifest(&folder, "outbound-hosts", r#"["*"]"#);
    let limits = leansync_host::config::PluginLimits {
        allow_networks: Vec::new(),
        dev_installs: false,
        ..test_limits()
    };
    let rt = runtime(scratch, limits);
    rt.reload_dir(&dir);
    let inst = installation("http-probe", json!({ "url": url }), &["*"]);
    (rt, inst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_of_every_host_still_cannot_reach_loopback_by_address_or_by_name() {
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/admin"),
        format!("http://localhost:{port}/admin"),
        format!("http://[::ffff:127.0.0.1]:{port}/admin"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/admin"),
        "http://10.0.0.1/admin".to_owned(),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let (rt, inst) = open_probe(scratch.path(), &url);
        let err = rt
            .on_call_event(&inst, &ringing("c1"), None, &d())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("destination IP prohibited"), "{url}: {msg}");
        assert!(msg.contains("plugins.allow_networks"), "{url}: {msg}");
    }
    assert!(receiver.received().is_empty(), "a refused request arrived");
}
