//! Egress through a real host: even with loopback allowed by the operator
//! (as these tests' peers need), a connector granted every host cannot
//! reach the host's own admin API, and the delivery says why; without that
//! setting a customer's SIP telephony account cannot point the host at
//! loopback or cloud metadata.

use std::time::{Duration, Instant};

use leansync_tests::host::{Host, Tenant, webhook};
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

#[tokio::test(flavor = "multi_thread")]
async fn a_sip_account_cannot_point_the_host_at_loopback_or_cloud_metadata() {
    // The operator setting back at its default: public PBXs only.
    let h = Host::start_with("", &[("LEANSYNC_TELEPHONY_ALLOW_NETWORKS", "")]).await;
    for (name, number, server, kind) in [
        ("Loop AG", "044 668 18 01", "127.0.0.1:5060", "loopback"),
        (
            "Meta AG",
            "044 668 18 02",
            "169.254.169.254:5060",
            "link-local",
        ),
        ("Named AG", "044 668 18 03", "localhost:5060", "loopback"),
    ] {
        let account = json!({
            "provider": "sip",
            "settings": { "server": server, "username": "probe" },
            "secret": "pw",
        });
        let t = Tenant::create_on(
            &h,
            name,
            &[number],
            account,
            webhook("http://127.0.0.1:9/x"),
            1,
        )
        .await;
        let path = format!("/api/v1/telephony-accounts/{}", t.telephony);
        let until = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            let a = h.ok(&t.admin, "GET", &path, None).await;
            if a["connection"]["last_error"].is_string() {
                break a["connection"].clone();
            }
            assert!(Instant::now() < until, "no connection status: {a}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let error = conn["last_error"].as_str().unwrap();
        assert_eq!(conn["connected"], false, "{conn}");
        assert!(
            error.contains(kind) && error.contains("telephony.allow_networks"),
            "{server}: {error}"
        );
    }
}

/// An operator lets one installation reach a non-public range (its app
/// behind a VPN; here the receiver on loopback) on a host whose plugins
/// reach public addresses only: that installation delivers, another
/// customer's installation of the same connector stays refused, and a
/// customer admin cannot widen its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_allows_a_range_for_one_installation_only() {
    let h = Host::start_with(
        "",
        &[
            ("LEANSYNC_PLUGINS_ALLOW_NETWORKS", ""),
            ("LEANSYNC_DELIVERY_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let r = leansync_tests::receiver::Receiver::start().await;
    let a = Tenant::create(&h, "Vpn AG", &["044 668 18 10"], &format!("{}/a", r.url())).await;
    let b = Tenant::create(
        &h,
        "Other AG",
        &["044 668 18 11"],
        &format!("{}/b", r.url()),
    )
    .await;
    let allow = format!("/api/v1/installations/{}/allow-networks", a.installation);
    let (s, e) = h
        .call(
            "PUT",
            &allow,
            Some(&a.admin),
            Some(json!({ "networks": ["127.0.0.0/8"] })),
        )
        .await;
    assert_eq!(s, 403, "a customer admin widened its egress: {e}");
    let (s, e) = h
        .call(
            "PUT",
            &allow,
            Some(&h.token),
            Some(json!({ "networks": ["localhost"] })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("invalid_network")),
        "{e}"
    );
    let set = h
        .op("PUT", &allow, Some(json!({ "networks": ["127.0.0.1"] })))
        .await;
    assert_eq!(set["allow_networks"], json!(["127.0.0.1/32"]));

    for t in [&a, &b] {
        h.op(
            "POST",
            "/api/v1/sim/calls",
            Some(json!({ "to": t.number, "from": "+41 79 555 12 13", "answer_after": 0.1, "hangup_after": 0.1 })),
        )
        .await;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while !r.received().iter().any(|x| x.uri.path() == "/a") {
        assert!(
            Instant::now() < until,
            "the allowed installation delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/api/v1/customers/{}/deliveries", b.customer);
    let until = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let rows = h.op("GET", &path, None).await;
        if let Some(e) = rows.as_array().and_then(|r| {
            r.iter()
                .find_map(|d| d["last_error"].as_str().map(str::to_owned))
        }) {
            break e;
        }
        assert!(Instant::now() < until, "no refusal recorded: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.contains("loopback") && error.contains("allow-networks"),
        "{error}"
    );
    assert!(
        !r.received().iter().any(|x| x.uri.path() == "/b"),
        "the other installation got through"
    );
    let log = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/audit", a.customer),
            None,
        )
        .await;
    assert!(
        log.to_string().contains("installation.allow_networks"),
        "{log}"
    );
}
