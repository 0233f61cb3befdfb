//! Several `leansync serve` processes on one PostgreSQL database act as one
//! service: a license made through one host is honoured by the other, a
//! live listener on one sees the calls the other handles, and a revocation
//! or a block through one host takes effect on every other within a second.

use std::time::{Duration, Instant};

use leansync_tests::db::{Backend, TestDb};
use leansync_tests::host::{Host, Tenant, eventually};
use leansync_tests::receiver::Receiver;
use serde_json::json;

/// The status host `h` answers for LeanSync Key `key` (401: not a key it
/// knows; 404: a known key asking for a call that does not exist).
async fn key_status(h: &Host, key: &str) -> u16 {
    h.call("GET", "/api/v1/calls/call_none", Some(key), None)
        .await
        .0
}

/// Waits up to `limit` for `h` to answer `want` for `key`; how long it took.
async fn until_status(h: &Host, key: &str, want: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if key_status(h, key).await == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_license_made_on_one_host_is_honoured_revoked_and_blocked_on_every_other() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = Host::start(&db.url).await;
    let b = Host::start_beside(&a).await;
    let c = Host::start_beside(&a).await;
    let receiver = Receiver::start().await;
    let t = Tenant::create(&a, "Scale AG", &["044 668 18 00"], &receiver.url()).await;

    for (name, h) in [("b", &b), ("c", &c)] {
        let took = until_status(h, &t.key, 404, Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "host {name} did not accept a key made on host a within 1 s (still {}):\n{}",
            key_status(h, &t.key).await,
            h.log()
        );
        eprintln!("key made on a accepted by {name} after {took:?}");
    }

    // A call host b sees for that number reaches the app, through b.
    b.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": t.number, "from": "+41 79 555 12 12", "answer_after": 0.1, "hangup_after": 0.2 })),
    )
    .await;
    let got = eventually(Duration::from_secs(15), || {
        let n = receiver.received().len();
        (n > 0).then_some(n)
    })
    .await;
    assert!(got.is_some(), "no delivery from host b:\n{}", b.log());

    // A live listener on b sees a call that host a handles, once, with
    // every state in order.
    let mut live = b.sse(&t.key).await;
    a.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": t.number, "from": "+41 79 555 34 34", "answer_after": 0.1, "hangup_after": 0.2 })),
    )
    .await;
    let mut states = Vec::new();
    while let Some(e) = live.next(Duration::from_secs(5)).await {
        if e["caller"] != "+41795553434" {
            continue; // the end of b's own call above
        }
        states.push(e["state"].as_str().unwrap_or_default().to_owned());
        if states.last().is_some_and(|s| s == "ended") {
            break;
        }
    }
    assert_eq!(
        states,
        ["ringing", "answered", "ended"],
        "host b's live stream for a call on host a:\n{}\n{}",
        a.log(),
        b.log()
    );

    // Revoked through a: b refuses the key within a second of the answer.
    a.ok(
        &t.admin,
        "DELETE",
        &format!("/api/v1/keys/{}", t.key_id),
        None,
    )
    .await;
    for (name, h) in [("b", &b), ("c", &c)] {
        let took = until_status(h, &t.key, 401, Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "host {name} still accepts a key revoked through host a 1 s ago:\n{}",
            h.log()
        );
        eprintln!("key revoked on a refused by {name} after {took:?}");
    }
    assert!(
        live.closed_within(Duration::from_secs(2)).await.is_some(),
        "host b kept streaming to a key revoked through host a"
    );

    // A customer licensed through c works on a and b; blocked through b,
    // a and c refuse its key within a second.
    let u = Tenant::create(&c, "Block AG", &["044 668 18 01"], &receiver.url()).await;
    for (name, h) in [("a", &a), ("b", &b)] {
        let took = until_status(h, &u.key, 404, Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "host {name} did not accept a key made on host c within 1 s:\n{}",
            h.log()
        );
    }
    b.op(
        "POST",
        &format!("/api/v1/customers/{}/block", u.customer),
        Some(json!({ "reason": "unpaid invoices" })),
    )
    .await;
    for (name, h) in [("a", &a), ("c", &c)] {
        let took = until_status(h, &u.key, 401, Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "host {name} still accepts the key of a customer blocked through host b 1 s ago:\n{}",
            h.log()
        );
        eprintln!("customer blocked on b refused by {name} after {took:?}");
    }
    drop((a, b, c));
    db.drop_db().await;
}

/// A host killed with SIGKILL while its deliveries are pending loses none:
/// the other host takes them over once their leases run out and delivers
/// each, with its idempotency key.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_hosts_pending_deliveries_are_delivered_by_the_other() {
    let db = TestDb::new(Backend::Postgres).await;
    let env = [
        ("LEANSYNC_DELIVERY_LEASE_SECS", "2"),
        // A's first failure waits 5-10 s: its deliveries stay pending.
        ("LEANSYNC_DELIVERY_BASE_BACKOFF_MS", "10000"),
    ];
    let mut a = Host::start_with(&db.url, &env).await;
    let b = Host::start_beside(&a).await;
    let receiver = Receiver::start().await;
    receiver.script(&[(503, &[])]);
    let t = Tenant::create(&a, "Survive AG", &["044 668 18 20"], &receiver.url()).await;
    a.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": t.number, "from": "+41 79 555 12 20", "answer_after": 0.1, "hangup_after": 0.1 })),
    )
    .await;
    let first = eventually(Duration::from_secs(10), || {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    assert!(first.is_some(), "host a never tried:\n{}", a.log());
    // Ringing failed once and waits; answered and ended queue behind it.
    let path = format!("/api/v1/customers/{}/deliveries", t.customer);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = a.op("GET", &path, None).await;
        let rows = rows.as_array().unwrap();
        if rows.len() == 3 {
            assert!(rows.iter().all(|d| d["status"] == "pending"), "{rows:?}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the call's 3 deliveries were not stored: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    a.kill9();

    let keys = || {
        receiver
            .received()
            .iter()
            .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // The 503 and then one success per delivery.
    let all = eventually(Duration::from_secs(20), || {
        (keys().len() >= 3 && receiver.received().len() >= 4).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "host b delivered {} of 3 after {:?}:\n{}",
        keys().len(),
        killed.elapsed(),
        b.log()
    );
    eprintln!(
        "a killed host's 3 deliveries delivered by the other within {:?}",
        killed.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = b.op("GET", &path, None).await;
        let rows = rows.as_array().unwrap();
        if rows.len() == 3 && rows.iter().all(|d| d["status"] == "delivered") {
            break;
        }
        assert!(
            Instant::now() < until,
            "not all recorded delivered: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.log().contains("took over deliveries"), "{}", b.log());
    drop(b);
    db.drop_db().await;
}

/// Two hosts' click-to-call limiters on one PostgreSQL database draw on one
/// bucket per key, and concurrent updates of one value lose no count.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_on_one_database_share_rate_limits_without_losing_counts() {
    use leansync_host::dialing::{Limiter, RateLimits, Verdict};
    use leansync_host::store::{Db, shared::Shared};

    let db = TestDb::new(Backend::Postgres).await;
    let open = || async {
        Shared::open(&Db::connect(&db.url).await.unwrap())
            .await
            .unwrap()
    };
    let (sa, sb) = (open().await, open().await);
    assert!(sa.is_shared());

    let bump = |s: Shared| async move {
        for _ in 0..50 {
            s.update(
                &["count", "other"],
                Duration::from_secs(60),
                |v: &mut [u64]| {
                    v[0] += 1;
                    v[1] += 2;
                },
            )
            .await
            .unwrap();
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(bump(sa.clone())),
        tokio::spawn(bump(sb.clone()))
    );
    x.unwrap();
    y.unwrap();
    let got: Vec<u64> = sa.read(&["count", "other"]).await.unwrap();
    assert_eq!(
        got,
        [100, 200],
        "concurrent updates from two hosts lost counts"
    );

    let limits = RateLimits {
        per_key_per_minute: 1.0,
        per_key_burst: 5.0,
        ..Default::default()
    };
    let (la, lb) = (
        Limiter::with_state(limits.clone(), sa),
        Limiter::with_state(limits, sb),
    );
    let mut allowed = 0;
    for i in 0..10 {
        let l = if i % 2 == 0 { &la } else { &lb };
        if l.check("key_1", "cus_1").await.unwrap() == Verdict::Allow {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 5,
        "a key's burst of 5 was granted {allowed} times across two hosts"
    );
    db.drop_db().await;
}

/// A plugin's push-to-screen reaches the listeners of its installation on
/// every host, on the call's number only; another customer's listener sees
/// nothing of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_push_to_screen_reaches_its_listeners_on_every_host() {
    let db = TestDb::new(Backend::Postgres).await;
    let plugins = tempfile::tempdir().unwrap();
    leansync_tests::plugins::install("healthy", plugins.path());
    leansync_tests::plugins::install("webhook", plugins.path());
    let dir = plugins.path().display().to_string();
    let a = Host::start_with(&db.url, &[("LEANSYNC_PLUGINS_DIR", &dir)]).await;
    let b = Host::start_beside(&a).await;
    let t = Tenant::create_for(
        &a,
        "Screen AG",
        &["044 668 18 20"],
        json!({ "connector": "healthy", "config": {} }),
    )
    .await;
    let receiver = Receiver::start().await;
    let other = Tenant::create(&a, "Other AG", &["044 668 18 30"], &receiver.url()).await;
    for key in [&t.key, &other.key] {
        assert!(
            until_status(&b, key, 404, Duration::from_secs(5))
                .await
                .is_some(),
            "host b never accepted a key made on host a"
        );
    }
    let mut on_b = b.sse(&t.key).await;
    let mut other_on_b = b.sse(&other.key).await;
    a.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": t.number, "from": "+41 79 555 56 56", "answer_after": 0.5, "hangup_after": 0.2 })),
    )
    .await;
    let mut pushed = Vec::new();
    let mut stored = 0;
    while let Some(e) = on_b.next(Duration::from_secs(5)).await {
        if e["pushed"] == true {
            assert!(e["seq"].is_null(), "{e}");
            assert_eq!(e["caller"], "+41795555656", "{e}");
            pushed.push(e);
        } else {
            stored += 1;
        }
        if stored >= 3 && !pushed.is_empty() {
            break;
        }
    }
    assert_eq!(
        pushed.len(),
        1,
        "the plugin on host a pushed the ringing call once; host b's listener saw {pushed:?}:\n{}",
        a.log()
    );
    assert_eq!(pushed[0]["state"], "ringing");
    assert_eq!(
        other_on_b.next(Duration::from_millis(500)).await,
        None,
        "another customer's listener saw this customer's call"
    );
    drop((a, b));
    db.drop_db().await;
}
