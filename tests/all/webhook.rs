//! The bundled `webhook` connector POSTs each event as JSON with an
//! HMAC-SHA256 signature a receiver can verify.

use hmac::{Hmac, Mac};
use leansync_host::plugins::{Delivery, InvokeError};
use leansync_tests::plugins::*;
use leansync_tests::receiver::Receiver;
use serde_json::json;
use sha2::Sha256;

fn webhook_installation(
    url: &str,
    secret: &str,
) -> std::sync::Arc<leansync_host::plugins::Installation> {
    let base = installation("webhook", json!({ "url": url }), &["127.0.0.1:*"]);
    let mut inst = (*base).clone();
    inst.secrets.insert("secret".into(), secret.into());
    std::sync::Arc::new(inst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_signed_event() {
    let receiver = Receiver::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("webhook", &dir);
    let rt = runtime(scratch.path(), test_limits());
    assert!(rt.reload_dir(&dir).failed.is_empty());
    let inst = webhook_installation(&format!("{}/hook", receiver.url()), "s3cret");
    let delivery = Delivery {
        idempotency_key: "idem-42".into(),
        attempt: 1,
    };
    rt.on_call_event(&inst, &ringing("call-7"), None, &delivery)
        .await
        .unwrap();

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.uri.path(), "/hook");
    let sig = req.headers["x-leansync-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&req.body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert_eq!(req.headers["idempotency-key"], "idem-42");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let text = body.to_string();
    assert!(text.contains("call-7"), "{text}");
    assert!(text.contains("+41791234567"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_errors_map_to_retryable_and_permanent() {
    let receiver = Receiver::start().await;
    receiver.script(&[(503, &[("retry-after", "7")]), (400, &[])]);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("webhook", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let inst = webhook_installation(&receiver.url(), "s");
    let d = Delivery {
        idempotency_key: "k".into(),
        attempt: 1,
    };
    let first = rt
        .on_call_event(&inst, &ringing("c"), None, &d)
        .await
        .unwrap_err();
    assert!(first.is_retryable(), "{first:?}");
    assert_eq!(first.retry_after(), Some(std::time::Duration::from_secs(7)));
    let second = rt
        .on_call_event(&inst, &ringing("c"), None, &d)
        .await
        .unwrap_err();
    assert!(matches!(second, InvokeError::Permanent(_)), "{second:?}");
}
