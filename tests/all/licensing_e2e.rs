//! Licensing end to end through the real binary and its HTTP API, on SQLite
//! and on PostgreSQL: the customer journey (consent, numbers, connector,
//! license, key), routing only to licensed numbers, SSE, revocation within
//! a second, reports, audit, secrets never stored or shown in clear.

use std::time::Duration;

use leansync_tests::db::{Backend, TestDb};
use leansync_tests::host::{Host, Tenant, eventually};
use leansync_tests::receiver::Receiver;
use serde_json::{Value, json};

async fn simulate(h: &Host, to: &str, from: &str, missed: bool) -> String {
    let v = h.op("POST", "/api/v1/sim/calls", Some(json!({ "to": to, "from": from, "answer_after": 0.2, "hangup_after": 0.3, "missed": missed }))).await;
    v["call_id"].as_str().unwrap().to_owned()
}

async fn journey(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url = if matches!(backend, Backend::Sqlite) {
        String::new()
    } else {
        db.url.clone()
    };
    let notified = Receiver::start().await;
    let hook = format!("{}/notifications", notified.url());
    let h = Host::start_with(&url, &[("LEANSYNC_NOTIFY_WEBHOOK", &hook)]).await;
    let receiver = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "Muster AG",
        &["044 123 45 67", "0041 44 123 45 68"],
        &format!("{}/calls", receiver.url()),
    )
    .await;
    assert_eq!(t.number, "+41441234567");

    // Numbers were imported after consent and are shown in both forms.
    let numbers = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/customers/{}/numbers", t.customer),
            None,
        )
        .await;
    let shown: Vec<(&str, &str)> = numbers
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["e164"].as_str().unwrap(), n["national"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("+41441234567", "044 123 45 67"),
            ("+41441234568", "044 123 45 68")
        ]
    );

    // A call on the licensed number reaches the webhook and the SSE stream.
    let mut sse = h.sse(&t.key).await;
    let call = simulate(&h, "044 123 45 67", "079 555 12 34", false).await;
    let ringing = sse
        .next(Duration::from_secs(5))
        .await
        .expect("ringing on the SSE stream");
    assert_eq!(ringing["state"], "ringing");
    assert_eq!(ringing["caller"], "+41795551234");
    assert_eq!(ringing["call_id"], call.as_str());
    let states = eventually(Duration::from_secs(10), || {
        let evs: Vec<String> = receiver
            .events()
            .iter()
            .filter(|e| e["call_id"] == call.as_str())
            .map(|e| e["state"].as_str().unwrap().to_owned())
            .collect();
        (evs.len() >= 3).then_some(evs)
    })
    .await
    .expect("three webhook deliveries");
    assert_eq!(states, ["ringing", "answered", "ended"]);
    let ended = receiver
        .events()
        .into_iter()
        .find(|e| e["call_id"] == call.as_str() && e["state"] == "ended")
        .unwrap();
    assert_eq!(ended["caller"], "+41795551234");
    assert_eq!(ended["licensed_number"], "+41441234567");
    assert_eq!(ended["installation_id"], t.installation.as_str());

    // The customer's second number has no license: nothing anywhere.
    let before = receiver.received().len();
    let other = simulate(&h, "044 123 45 68", "079 555 12 34", true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        before,
        "an unlicensed number must reach nothing"
    );
    while let Some(e) = sse.next(Duration::from_millis(100)).await {
        assert_ne!(
            e["call_id"],
            other.as_str(),
            "SSE showed an unlicensed call"
        );
    }

    // Usage report, JSON and CSV: the assignment, masked keys, no secrets.
    let usage = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/customers/{}/usage", t.customer),
            None,
        )
        .await;
    let app = &usage["applications"][0];
    assert_eq!(app["connector"], "webhook");
    assert_eq!(app["provisioned"], 1);
    assert_eq!(app["available"], 0);
    assert_eq!(app["assigned"][0]["number"], "+41441234567");
    let masked = app["assigned"][0]["keys"][0].as_str().unwrap();
    assert!(
        masked.contains('…') || masked.contains('*'),
        "key not masked: {masked}"
    );
    let (_, csv) = h
        .call_text(
            "GET",
            &format!("/api/v1/customers/{}/usage?format=csv", t.customer),
            Some(&t.admin),
            None,
        )
        .await;
    assert!(
        csv.contains("+41441234567") && csv.contains(&t.license),
        "{csv}"
    );
    let cli = h
        .command()
        .args([
            "report",
            "usage",
            "--customer",
            &t.customer,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains("+41441234567"));
    for text in [
        usage.to_string(),
        csv.clone(),
        String::from_utf8_lossy(&cli.stdout).to_string(),
    ] {
        assert!(
            !text.contains(&t.key),
            "the key secret leaked into a report"
        );
    }

    // Revoking the key stops the SSE stream and deliveries within a second.
    let revoked_at = std::time::Instant::now();
    h.ok(
        &t.admin,
        "DELETE",
        &format!("/api/v1/keys/{}", t.key_id),
        None,
    )
    .await;
    let closed = sse.closed_within(Duration::from_secs(1)).await;
    assert!(closed.is_some(), "SSE still open 1 s after revocation");
    let before = receiver.received().len();
    simulate(&h, "044 123 45 67", "079 555 12 34", true).await;
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        receiver.received().len(),
        before,
        "a revoked key's license still received events"
    );
    let (s, body) = h
        .call(
            "POST",
            "/api/v1/calls",
            Some(&t.key),
            Some(json!({ "to": "044 999 88 77" })),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_key");

    // Rotation issues a fresh key that works again.
    let rotated = h
        .ok(
            &t.admin,
            "POST",
            &format!("/api/v1/licenses/{}/keys", t.license),
            None,
        )
        .await;
    let new_key = rotated["key"].as_str().unwrap();
    let mut sse = h.sse(new_key).await;
    simulate(&h, "044 123 45 67", "044 765 43 21", true).await;
    let e = sse
        .next(Duration::from_secs(5))
        .await
        .expect("event after rotation");
    assert_eq!(e["caller"], "+41447654321");
    // Asked for everything stored (last_event_id=0), the fresh key gets
    // only what happened after it was made, never the older calls.
    let mut replay = h.sse_after(new_key, 0).await;
    let mut callers = Vec::new();
    while let Some(e) = replay.next(Duration::from_millis(500)).await {
        callers.push(e["caller"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        !callers.is_empty() && callers.iter().all(|c| c == "+41447654321"),
        "replay to a fresh key: {callers:?}"
    );

    // Consent revoked: monitoring stops for the account's numbers at once.
    h.ok(
        &t.admin,
        "DELETE",
        &format!("/api/v1/telephony-accounts/{}/consent", t.telephony),
        None,
    )
    .await;
    assert!(
        sse.closed_within(Duration::from_secs(1)).await.is_some(),
        "consent revocation must stop the stream"
    );
    let notes = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/customers/{}/notifications", t.customer),
            None,
        )
        .await;
    let kinds: Vec<&str> = notes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["consent.grant", "consent.revoke"]);
    let hooked = eventually(Duration::from_secs(5), || {
        let kinds: Vec<String> = notified
            .received()
            .iter()
            .filter_map(|x| serde_json::from_slice::<Value>(&x.body).ok())
            .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        (kinds.len() >= 2).then_some(kinds)
    })
    .await;
    assert_eq!(
        hooked.as_deref(),
        Some(&["consent.grant".to_owned(), "consent.revoke".to_owned()][..]),
        "notification webhook"
    );

    // The audit log names the acting person for every admin action.
    let audit = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/customers/{}/audit", t.customer),
            None,
        )
        .await;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (action, actor) in [
        ("customer.create", "ops@leansync.test"),
        ("consent.grant", "admin@muster-ag.test"),
        ("numbers.import", "admin@muster-ag.test"),
        ("installation.create", "admin@muster-ag.test"),
        ("license.provision", "ops@leansync.test"),
        ("license.assign", "admin@muster-ag.test"),
        ("key.revoke", "admin@muster-ag.test"),
        ("key.rotate", "admin@muster-ag.test"),
        ("consent.revoke", "admin@muster-ag.test"),
    ] {
        assert!(
            actions.contains(&(action.to_owned(), actor.to_owned())),
            "audit lacks {action} by {actor}: {actions:?}"
        );
    }
    let provision = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "license.provision")
        .unwrap();
    assert_eq!(provision["before"]["state"], "ordered");
    assert_eq!(provision["after"]["state"], "provisioned");

    // Secrets: never in the log, never in the database in clear, never in the API.
    let log = h.log();
    for secret in [
        t.key.as_str(),
        new_key,
        "pbx-password-123",
        "whsec",
        h.token.as_str(),
    ] {
        assert!(!log.contains(secret), "secret in the host log");
    }
    let dump = database_text(&h, &db.url, backend).await;
    for secret in [
        t.key.as_str(),
        new_key,
        "pbx-password-123",
        "whsec",
        h.token.as_str(),
    ] {
        assert!(!dump.contains(secret), "secret stored in clear");
    }
    assert!(
        dump.contains("+41441234567"),
        "dump should hold the data (sanity)"
    );
    let tel = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/telephony-accounts/{}", t.telephony),
            None,
        )
        .await;
    assert_eq!(tel["has_secret"], true);
    assert!(!tel.to_string().contains("pbx-password-123"));
    let inst = h
        .ok(
            &t.admin,
            "GET",
            &format!("/api/v1/installations/{}", t.installation),
            None,
        )
        .await;
    assert!(!inst.to_string().contains("whsec"), "{inst}");
    drop(h);
    db.drop_db().await;
}

/// Every text value of every licensing table.
async fn database_text(h: &Host, url: &str, backend: Backend) -> String {
    let _ = h;
    let mut out = String::new();
    match backend {
        Backend::Sqlite => {
            for f in ["leansync.db", "leansync.db-wal"] {
                if let Ok(bytes) = std::fs::read(h.data.join(f)) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        Backend::Postgres => {
            use sqlx::{Connection, Row};
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            for table in [
                "accounts",
                "telephony_accounts",
                "installations",
                "licenses",
                "license_keys",
                "numbers",
                "audit",
            ] {
                let rows = sqlx::query(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                for r in rows {
                    out.push_str(&r.get::<String, _>(0));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_journey_sqlite() {
    journey(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_journey_postgres() {
    journey(Backend::Postgres).await;
}

/// A connector places a click-to-call only when its manifest asks for
/// `place-calls`, only from a number its installation is licensed for, and
/// through the same checks as the API (here: the simulated PBX rings).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_places_calls_only_with_the_capability_and_from_its_licensed_numbers() {
    let plugins = tempfile::tempdir().unwrap();
    let folder = leansync_tests::plugins::install("healthy", plugins.path());
    let dir = plugins.path().display().to_string();
    let h = Host::start_with("", &[("LEANSYNC_PLUGINS_DIR", &dir)]).await;
    let t = Tenant::create_for(
        &h,
        "Dialer AG",
        &["044 668 18 40", "044 668 18 41"],
        json!({ "connector": "healthy", "config": {} }),
    )
    .await;
    let dial = |from: &'static str| {
        let (h, path) = (&h, format!("/api/v1/apps/{}/dial", t.installation));
        async move {
            let (status, body) = h
                .call(
                    "POST",
                    &path,
                    None,
                    Some(json!({ "from": from, "to": "044 555 66 77" })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let refused = dial("+41446681840").await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("add `place-calls = true` under [capabilities]")),
        "{refused}"
    );

    // The operator's copy asks for it: the host reloads the folder.
    let manifest = folder.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("key-value = true", "key-value = true\nplace-calls = true"),
    )
    .unwrap();
    let mut placed = Value::Null;
    for _ in 0..100 {
        placed = dial("+41446681840").await;
        if placed["call_id"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(placed["call_id"].is_string(), "{placed}\n{}", h.log());
    // Not from the customer's other, unlicensed number.
    let other = dial("+41446681841").await;
    assert!(
        other["error"]
            .as_str()
            .is_some_and(|e| e.contains("has no active license for this installation")),
        "{other}"
    );
}
