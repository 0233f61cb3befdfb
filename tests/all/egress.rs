//! Plugins' egress through a real host: even with loopback allowed by the
//! operator (as these tests' peers need), a connector granted every host
//! cannot reach the host's own admin API, and the delivery says why.

use std::time::{Duration, Instant};

use leansync_tests::host::{Host, Tenant};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_pointed_at_the_hosts_own_api_is_refused_and_says_why() {
    let h = Host::start("").await;
    let own = json!({
        "connector": "webhook",
        "config": { "url": format!("{}/api/v1/customers", h.url), "secret": "whsec" },
        "granted_hosts": ["*"],
    });
    let t = Tenant::create_for(&h, "Probe AG", &["044 668 18 00"], own).await;
    h.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": t.number, "from": "+41 79 555 12 12", "answer_after": 0.1, "hangup_after": 0.2 })),
    )
    .await;
    let path = format!("/api/v1/customers/{}/deliveries", t.customer);
    let until = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let rows = h.op("GET", &path, None).await;
        let error = rows.as_array().and_then(|r| {
            r.iter()
                .find_map(|d| d["last_error"].as_str().map(str::to_owned))
        });
        if let Some(e) = error {
            break e;
        }
        assert!(Instant::now() < until, "no failed attempt recorded: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("own HTTP listener"), "{error}");
    let rows = h.op("GET", &path, None).await;
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "delivered"),
        "{rows}"
    );
}
