//! Admin API rules through the binary: tenant isolation on every route of
//! the route table, bad input refused without partial writes, license state
//! transitions, click-to-call policy and abuse blocking.

use std::time::Duration;

use leansync_host::api::admin::ROUTES;
use leansync_tests::db::{Backend, TestDb};
use leansync_tests::host::{Host, Tenant};
use leansync_tests::receiver::Receiver;
use serde_json::{Value, json};

/// A database of `backend`, a host on it and a receiver for deliveries.
async fn start(backend: Backend) -> (TestDb, Host, Receiver) {
    let db = TestDb::new(backend).await;
    let h = Host::start(if matches!(backend, Backend::Sqlite) {
        ""
    } else {
        &db.url
    })
    .await;
    (db, h, Receiver::start().await)
}

async fn a_customer_admin_sees_nothing_of_another_customer_on_any_route(backend: Backend) {
    let (db, h, r) = start(backend).await;
    let a = Tenant::create(
        &h,
        "Alpha AG",
        &["044 111 11 11"],
        &format!("{}/a", r.url()),
    )
    .await;
    let b = Tenant::create(
        &h,
        "Beta GmbH",
        &["044 222 22 22"],
        &format!("{}/b", r.url()),
    )
    .await;
    let a_before = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/usage", a.customer),
            None,
        )
        .await;
    let a_license_before = h
        .op("GET", &format!("/api/v1/licenses/{}", a.license), None)
        .await;

    let mut checked = 0;
    for route in ROUTES {
        let path = route
            .path
            .replace("{cid}", &a.customer)
            .replace("{tid}", &a.telephony)
            .replace("{iid}", &a.installation)
            .replace("{lid}", &a.license)
            .replace("{kid}", &a.key_id)
            .replace("{id}", "acc_of_alpha");
        let body = route
            .body
            .map(|b| serde_json::from_str::<Value>(b).unwrap());
        let (status, resp) = h
            .call(&route.method.to_uppercase(), &path, Some(&b.admin), body)
            .await;
        let text = resp.to_string();
        if path == route.path {
            // Routes without an id: either refused to a customer admin or
            // scoped to B's own data.
            match (route.method, route.path) {
                ("get", "/api/v1/me")
                | ("get", "/api/v1/prices")
                | ("get", "/api/v1/openapi.json") => {
                    assert_eq!(status, 200, "{} {}", route.method, route.path)
                }
                ("get", "/api/v1/customers") => {
                    assert_eq!(status, 200);
                    let ids: Vec<&str> = resp
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["id"].as_str().unwrap())
                        .collect();
                    assert_eq!(ids, [b.customer.as_str()]);
                }
                _ => assert_eq!(
                    status, 403,
                    "{} {} -> {status}: {text}",
                    route.method, route.path
                ),
            }
        } else {
            assert!(
                status == 404 || status == 403,
                "{} {} answered {status} to another customer's admin: {text}",
                route.method,
                path
            );
        }
        for secret in ["Alpha AG", "+41441111111", "admin@alpha-ag.test"] {
            assert!(
                !text.contains(secret),
                "{} {} revealed {secret}: {text}",
                route.method,
                path
            );
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} routes checked");

    // Nothing of A changed through any of those attempts.
    let a_after = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/usage", a.customer),
            None,
        )
        .await;
    assert_eq!(a_before["applications"], a_after["applications"]);
    assert_eq!(
        a_license_before,
        h.op("GET", &format!("/api/v1/licenses/{}", a.license), None)
            .await
    );
    let tel = h
        .op(
            "GET",
            &format!("/api/v1/telephony-accounts/{}", a.telephony),
            None,
        )
        .await;
    assert!(tel["consent"].is_object());
    // And A's key still works.
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/calls",
            Some(&a.key),
            Some(json!({ "to": "044 999 88 77" })),
        )
        .await;
    assert_eq!(s, 202);
    db.drop_db().await;
}

async fn bad_input_gets_a_clear_4xx_and_writes_nothing(backend: Backend) {
    let (db, h, r) = start(backend).await;
    let t = Tenant::create(
        &h,
        "Gamma AG",
        &["044 333 33 33"],
        &format!("{}/g", r.url()),
    )
    .await;
    let numbers = |v: Value| v.as_array().unwrap().len();
    let before = numbers(
        h.op(
            "GET",
            &format!("/api/v1/customers/{}/numbers", t.customer),
            None,
        )
        .await,
    );

    // One malformed number in a batch: refused, naming it; none stored.
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/telephony-accounts/{}/import", t.telephony),
            Some(&t.admin),
            Some(json!({ "numbers": ["044 333 33 34", "12ab"] })),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["error"]["code"], "invalid_number");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("12ab"),
        "{e}"
    );
    assert_eq!(
        numbers(
            h.op(
                "GET",
                &format!("/api/v1/customers/{}/numbers", t.customer),
                None
            )
            .await
        ),
        before
    );

    // Unknown ids.
    for path in [
        "/api/v1/licenses/lic_nope",
        "/api/v1/customers/cus_nope",
        "/api/v1/installations/ins_nope",
        "/api/v1/telephony-accounts/tel_nope",
    ] {
        let (s, e) = h.call("GET", path, Some(&h.token), None).await;
        assert_eq!(s, 404, "{path}: {e}");
        assert_eq!(e["error"]["code"], "not_found");
    }

    // Illegal transitions.
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/licenses/{}/provision", t.license),
            Some(&h.token),
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("illegal_transition")),
        "{e}"
    );
    let ordered = h
        .ok(
            &t.admin,
            "POST",
            &format!("/api/v1/installations/{}/licenses", t.installation),
            Some(json!({ "count": 1 })),
        )
        .await;
    let lid = ordered[0]["id"].as_str().unwrap();
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/licenses/{lid}/assign"),
            Some(&t.admin),
            Some(json!({ "number": "044 333 33 33" })),
        )
        .await;
    assert_eq!(s, 409, "assigning an unprovisioned license: {e}");
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/licenses/{lid}/provision"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(s, 403, "a customer admin cannot provision");
    h.op("POST", &format!("/api/v1/licenses/{lid}/provision"), None)
        .await;
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/licenses/{lid}/assign"),
            Some(&t.admin),
            Some(json!({ "number": "044 333 33 33" })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("already_licensed")),
        "one license per (number, application): {e}"
    );
    h.ok(
        &t.admin,
        "POST",
        &format!("/api/v1/licenses/{lid}/cancel"),
        None,
    )
    .await;
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/licenses/{lid}/cancel"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(s, 409);

    // A customer admin cannot make a simulated account (served by the
    // host's own telephony): it would claim numbers by typing them.
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/customers/{}/telephony-accounts", t.customer),
            Some(&t.admin),
            Some(json!({ "provider": "sim", "settings": { "numbers": ["044 999 00 01"] } })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("sim_operator_only")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("\"sip\""),
        "{e}"
    );
    // Nor change the numbers of the one the operator made for it.
    let (s, e) = h
        .call(
            "PUT",
            &format!("/api/v1/telephony-accounts/{}", t.telephony),
            Some(&t.admin),
            Some(json!({ "settings": { "numbers": ["044 999 00 01"] } })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("sim_operator_only")),
        "{e}"
    );
    // Import takes only numbers the account reports.
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/telephony-accounts/{}/import", t.telephony),
            Some(&t.admin),
            Some(json!({ "numbers": ["044 999 00 01"] })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("number_not_reported")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("+41449990001"),
        "{e}"
    );

    // Import without consent.
    let t2 = h
        .ok(
            &h.token,
            "POST",
            &format!("/api/v1/customers/{}/telephony-accounts", t.customer),
            Some(json!({ "provider": "sim", "settings": { "numbers": ["044 333 33 35"] } })),
        )
        .await;
    let (s, e) = h
        .call(
            "POST",
            &format!(
                "/api/v1/telephony-accounts/{}/import",
                t2["id"].as_str().unwrap()
            ),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("consent_required")),
        "{e}"
    );
    let (s, e) = h
        .call(
            "POST",
            &format!(
                "/api/v1/telephony-accounts/{}/consent",
                t2["id"].as_str().unwrap()
            ),
            Some(&h.token),
            None,
        )
        .await;
    assert_eq!(s, 403, "the operator cannot consent for a customer: {e}");
    let unchanged = numbers(
        h.op(
            "GET",
            &format!("/api/v1/customers/{}/numbers", t.customer),
            None,
        )
        .await,
    );
    assert_eq!(unchanged, before, "a refused import stores nothing");

    // Config validated against the connector's schema, naming the field.
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/customers/{}/installations", t.customer),
            Some(&t.admin),
            Some(json!({ "connector": "webhook", "config": { "url": "ftp://x" } })),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("url"),
        "{e}"
    );
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/customers/{}/installations", t.customer),
            Some(&t.admin),
            Some(json!({ "connector": "nonesuch" })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("unknown_connector")),
        "{e}"
    );

    // Malformed and oversized bodies.
    let (s, e) = h
        .call(
            "POST",
            "/api/v1/customers",
            Some(&h.token),
            Some(json!({ "nom": "x" })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{e}"
    );
    let (s, e) = h
        .call(
            "POST",
            "/api/v1/customers",
            Some(&h.token),
            Some(json!({ "name": "x".repeat(100_000) })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{e}"
    );
    let customers = h.op("GET", "/api/v1/customers", None).await;
    assert_eq!(customers.as_array().unwrap().len(), 1);

    // No or a wrong token.
    let (s, e) = h.call("GET", "/api/v1/customers", None, None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    let (s, _) = h
        .call("GET", "/api/v1/customers", Some("lsa_wrong"), None)
        .await;
    assert_eq!(s, 401);
    db.drop_db().await;
}

async fn click_to_call_policy_limits_and_blocking(backend: Backend) {
    let (db, h, r) = start(backend).await;
    let t = Tenant::create(
        &h,
        "Delta AG",
        &["044 444 44 44"],
        &format!("{}/d", r.url()),
    )
    .await;
    // Every attempt, refused ones included, draws on the key's bucket
    // (burst 5), so the checks below switch to a fresh key where needed.
    let key = std::sync::Mutex::new(t.key.clone());
    let call = |to: &'static str| {
        let h = &h;
        let key = key.lock().unwrap().clone();
        async move {
            h.call(
                "POST",
                "/api/v1/calls",
                Some(&key),
                Some(json!({ "to": to })),
            )
            .await
        }
    };

    let (s, placed) = call("044 555 66 77").await;
    assert_eq!(s, 202, "{placed}");
    assert_eq!(placed["from"], "+41444444444");
    let id = placed["call_id"].as_str().unwrap().to_owned();
    let mut state = Value::Null;
    for _ in 0..100 {
        let current = key.lock().unwrap().clone();
        let (s, st) = h
            .call("GET", &format!("/api/v1/calls/{id}"), Some(&current), None)
            .await;
        if s == 200 {
            state = st;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["events"][0]["direction"], "outbound", "{state}");
    assert_eq!(state["events"][0]["callee"], "+41445556677", "{state}");

    for (to, code) in [
        ("0901 123 456", "destination_blocked"),
        ("112", "emergency_number"),
        ("144", "emergency_number"),
        ("+49 30 1234567", "destination_blocked"),
    ] {
        let (s, e) = call(to).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (422, Some(code)),
            "{to}: {e}"
        );
    }
    let rotated = h
        .ok(
            &t.admin,
            "POST",
            &format!("/api/v1/licenses/{}/keys", t.license),
            None,
        )
        .await;
    *key.lock().unwrap() = rotated["key"].as_str().unwrap().to_owned();
    let (s, e) = call("hello").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("invalid_number")),
        "{e}"
    );
    // International allowed per customer by the operator.
    h.op(
        "PUT",
        &format!("/api/v1/customers/{}/dial-permissions", t.customer),
        Some(json!({ "international": true, "premium": false })),
    )
    .await;
    let (s, e) = call("+49 30 1234567").await;
    assert_eq!(s, 202, "{e}");

    // The per-key bucket (burst 5) runs out: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let current = key.lock().unwrap().clone();
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/calls", h.url))
            .bearer_auth(current)
            .json(&json!({ "to": "044 555 66 78" }))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            limited = Some(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            );
            break;
        }
    }
    let retry_after = limited
        .expect("rate limit never hit")
        .expect("Retry-After header");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);

    // A blocked customer can neither call nor receive; unblocking restores it.
    h.op(
        "POST",
        &format!("/api/v1/customers/{}/block", t.customer),
        Some(json!({ "reason": "abuse report 4711" })),
    )
    .await;
    let (s, e) = call("044 555 66 79").await;
    assert_eq!(s, 401, "{e}");
    let outbound_to = |n: &str| {
        r.received()
            .iter()
            .filter_map(|x| serde_json::from_slice::<Value>(&x.body).ok())
            .filter(|v| v["event"]["callee"] == n)
            .count()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for refused in ["+41901123456", "+41445556679"] {
        assert_eq!(
            outbound_to(refused),
            0,
            "a refused call to {refused} was originated"
        );
    }
    let audit = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/audit", t.customer),
            None,
        )
        .await;
    let block = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "customer.block")
        .expect("block audited");
    assert_eq!(block["after"]["blocked_reason"], "abuse report 4711");
    db.drop_db().await;
}

async fn admin_tokens_are_rotated_disabled_and_stop_with_a_customer_block(backend: Backend) {
    let (db, h, r) = start(backend).await;
    let t = Tenant::create(
        &h,
        "Epsilon AG",
        &["044 555 55 55"],
        &format!("{}/e", r.url()),
    )
    .await;
    let me = h.ok(&t.admin, "GET", "/api/v1/me", None).await;
    let id = me["id"].as_str().unwrap().to_owned();

    // The admin rotates their own token: the old one is gone at once.
    let rotated = h
        .ok(
            &t.admin,
            "POST",
            &format!("/api/v1/accounts/{id}/token"),
            None,
        )
        .await;
    let token = rotated["token"].as_str().unwrap().to_owned();
    assert!(rotated["account"]["token_expires_at_ms"].as_i64().unwrap() > 0);
    let (s, e) = h.call("GET", "/api/v1/me", Some(&t.admin), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    h.ok(&token, "GET", "/api/v1/me", None).await;

    // An operator disables the account; the message says why.
    h.op(
        "POST",
        &format!("/api/v1/accounts/{id}/disable"),
        Some(json!({ "reason": "left the company" })),
    )
    .await;
    let (s, e) = h.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("account_disabled"))
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("left the company"),
        "{e}"
    );
    h.op("POST", &format!("/api/v1/accounts/{id}/enable"), None)
        .await;
    h.ok(&token, "GET", "/api/v1/me", None).await;

    // Blocking the customer stops its admins too, lifting the block restores them.
    h.op(
        "POST",
        &format!("/api/v1/customers/{}/block", t.customer),
        Some(json!({ "reason": "unpaid invoices" })),
    )
    .await;
    let (s, e) = h.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("customer_blocked"))
    );
    h.op(
        "DELETE",
        &format!("/api/v1/customers/{}/block", t.customer),
        None,
    )
    .await;
    h.ok(&token, "GET", "/api/v1/me", None).await;

    // The only operator cannot lock everyone out.
    let ops = h.op("GET", "/api/v1/me", None).await;
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/accounts/{}/disable", ops["id"].as_str().unwrap()),
            Some(&h.token),
            Some(json!({ "reason": "test" })),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("last_operator"))
    );

    let audit = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/audit", t.customer),
            None,
        )
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for want in ["account.token", "account.disable", "account.enable"] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
    db.drop_db().await;
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    a_customer_admin_sees_nothing_of_another_customer_on_any_route,
    bad_input_gets_a_clear_4xx_and_writes_nothing,
    click_to_call_policy_limits_and_blocking,
    admin_tokens_are_rotated_disabled_and_stop_with_a_customer_block
);
