//! The call pipeline over a real store (SQLite and PostgreSQL) and real
//! plugins: licensed routing, ordered delivery, retries, dead letters and
//! re-drive, isolation between installations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leansync_host::call::{CallEvent, CallState};
use leansync_host::number::E164;
use leansync_host::pipeline::routing::StaticRouting;
use leansync_host::pipeline::{DeliveryStatus, Outbox, Pipeline, Settings, Target};
use leansync_host::plugins::{PluginRuntime, Status};
use leansync_tests::db::{Backend, TestDb};
use leansync_tests::plugins::*;
use leansync_tests::receiver::Receiver;
use serde_json::json;

fn webhook_target(id: &str, url: &str) -> Target {
    let mut inst = (*installation("webhook", json!({ "url": url }), &["127.0.0.1:*"])).clone();
    inst.id = id.into();
    inst.secrets.insert("secret".into(), "s".into());
    Target {
        license_id: format!("lic-{id}"),
        customer_id: "cust-1".into(),
        installation: Arc::new(inst),
        deliver_internal: false,
        lookup: false,
    }
}

struct Bench {
    pipeline: Pipeline,
    routing: Arc<StaticRouting>,
    runtime: PluginRuntime,
    _scratch: tempfile::TempDir,
}

async fn bench(db: &TestDb, settings: Settings) -> Bench {
    bench_routed(db, settings, &[]).await
}

/// A pipeline whose routing knows `targets` before it starts (as in the
/// host, where licensing is loaded before crash recovery runs).
async fn bench_routed(db: &TestDb, settings: Settings, targets: &[(E164, Target)]) -> Bench {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("webhook", &dir);
    let rt: PluginRuntime = runtime(scratch.path(), test_limits());
    assert!(rt.reload_dir(&dir).failed.is_empty());
    let routing = Arc::new(StaticRouting::default());
    for (n, t) in targets {
        routing.add(n.clone(), t.clone());
    }
    let outbox = Outbox::connect(&db.url).await.unwrap();
    let pipeline = Pipeline::start(outbox, rt.clone(), routing.clone(), settings)
        .await
        .unwrap();
    Bench {
        pipeline,
        routing,
        runtime: rt,
        _scratch: scratch,
    }
}

fn num(s: &str) -> E164 {
    E164::parse(s).unwrap()
}

fn fast_settings() -> Settings {
    Settings {
        max_attempts: 3,
        base_backoff: Duration::from_millis(20),
        ..Settings::default()
    }
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !cond().await {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event(call: &str, state: CallState, number: &str) -> CallEvent {
    let mut e = ringing(call);
    e.state = state;
    e.monitored = E164::parse(number).unwrap();
    e.callee = e.monitored.clone();
    e
}

async fn routes_only_to_licensed_installations_in_call_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let b = bench(&db, fast_settings()).await;
    b.routing.add(
        num("044 123 45 67"),
        webhook_target("inst-a", &receiver.url()),
    );
    for state in [CallState::Ringing, CallState::Answered, CallState::Ended] {
        b.pipeline
            .submit(event("call-1", state, "044 123 45 67"))
            .await
            .unwrap();
    }
    // Unlicensed number: stored, delivered nowhere.
    b.pipeline
        .submit(event("call-2", CallState::Ringing, "044 999 99 99"))
        .await
        .unwrap();
    wait_until("3 deliveries", Duration::from_secs(10), async || {
        receiver.received().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 3, "only the licensed number's events arrive");
    let states: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .unwrap()
                .to_string()
        })
        .map(|s| {
            ["ringing", "answered", "ended"]
                .into_iter()
                .find(|st| s.contains(&format!("\"{st}\"")))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(states, ["ringing", "answered", "ended"]);
    assert!(
        got.iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("call-2"))
    );
    db.drop_db().await;
}

async fn a_failing_installation_retries_dies_and_is_redriven_without_delaying_others(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let failing = Receiver::start().await;
    failing.script(&[(500, &[]), (429, &[("retry-after", "1")]), (500, &[])]);
    let healthy = Receiver::start().await;
    let b = bench(&db, fast_settings()).await;
    b.routing.add(
        num("044 123 45 67"),
        webhook_target("inst-failing", &failing.url()),
    );
    b.routing.add(
        num("044 123 45 67"),
        webhook_target("inst-healthy", &healthy.url()),
    );
    let t = Instant::now();
    b.pipeline
        .submit(event("call-9", CallState::Ringing, "044 123 45 67"))
        .await
        .unwrap();

    wait_until(
        "the healthy installation",
        Duration::from_secs(5),
        async || !healthy.received().is_empty(),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "healthy waited for the failing one: {:?}",
        t.elapsed()
    );

    let outbox = b.pipeline.outbox().clone();
    wait_until("a dead letter", Duration::from_secs(10), async || {
        !outbox.dead(None).await.unwrap().is_empty()
    })
    .await;
    // 500, then 429 honoured (>= 1 s), then 500: three attempts.
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After not respected"
    );
    assert_eq!(failing.received().len(), 3);
    let dead = outbox.dead(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].installation_id, "inst-failing");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{:?}",
        dead[0]
    );
    let keys: Vec<String> = failing
        .received()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "same idempotency key on every attempt: {keys:?}"
    );

    // Re-drive: the receiver now answers 200.
    assert!(b.pipeline.redrive(dead[0].id).await.unwrap());
    wait_until(
        "the re-driven delivery",
        Duration::from_secs(5),
        async || {
            outbox.delivery(dead[0].id).await.unwrap().unwrap().status == DeliveryStatus::Delivered
        },
    )
    .await;
    assert_eq!(failing.received().len(), 4);
    assert_eq!(healthy.received().len(), 1);
    let flow = b.pipeline.metrics().snapshot();
    let f = flow
        .iter()
        .find(|f| f.installation_id == "inst-failing")
        .unwrap();
    assert_eq!((f.delivered, f.retried, f.dead), (1, 2, 1));
    db.drop_db().await;
}

async fn pending_deliveries_survive_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    {
        // The receiver is down-like (503) so nothing completes, then the
        // pipeline is dropped as if the host died.
        receiver.script(&[(503, &[]), (503, &[]), (503, &[])]);
        let b = bench(
            &db,
            Settings {
                base_backoff: Duration::from_secs(30),
                ..fast_settings()
            },
        )
        .await;
        b.routing.add(
            num("044 123 45 67"),
            webhook_target("inst-a", &receiver.url()),
        );
        b.pipeline
            .submit(event("call-r", CallState::Ringing, "044 123 45 67"))
            .await
            .unwrap();
        wait_until("the first attempt", Duration::from_secs(5), async || {
            !receiver.received().is_empty()
        })
        .await;
        // The host goes away: it renews no lease any more (a crashed one
        // stops renewing too; its leases then run out).
        b.pipeline.release().await.unwrap();
    }
    // Enough attempts for the rest of the script whether or not the first
    // attempt's outcome was recorded before the "crash".
    let _b = bench_routed(
        &db,
        Settings {
            max_attempts: 5,
            ..fast_settings()
        },
        &[(
            num("044 123 45 67"),
            webhook_target("inst-a", &receiver.url()),
        )],
    )
    .await;
    // Restarted pipeline picks the pending delivery up again (503 x2 more, then 200).
    wait_until(
        "redelivery after restart",
        Duration::from_secs(10),
        async || receiver.received().len() >= 4,
    )
    .await;
    let keys: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "one delivery, one idempotency key");
    db.drop_db().await;
}

async fn a_revoked_license_stops_delivery(backend: Backend) {
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let b = bench(&db, fast_settings()).await;
    b.routing.add(
        num("044 123 45 67"),
        webhook_target("inst-a", &receiver.url()),
    );
    b.pipeline
        .submit(event("c1", CallState::Ringing, "044 123 45 67"))
        .await
        .unwrap();
    wait_until("first delivery", Duration::from_secs(5), async || {
        receiver.received().len() == 1
    })
    .await;
    b.routing.clear();
    b.pipeline
        .submit(event("c2", CallState::Ringing, "044 123 45 67"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    db.drop_db().await;
}

/// A target of customer `customer`.
fn customer_target(id: &str, customer: &str, url: &str) -> Target {
    let mut t = webhook_target(id, url);
    let mut inst = (*t.installation).clone();
    inst.customer_id = customer.into();
    t.installation = Arc::new(inst);
    t.customer_id = customer.into();
    t
}

/// One customer's app that accepts connections and never answers costs
/// that customer's installation only: its breaker opens, while another
/// customer's installation of the same connector keeps delivering at the
/// first attempt and the connector stays `active` in the catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_answers_degrades_only_its_own_installation() {
    let db = TestDb::new(Backend::Sqlite).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let healthy = Receiver::start().await;
    let settings = Settings {
        max_attempts: 20,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..Settings::default()
    };
    let b = bench(&db, settings).await;
    b.routing.add(
        num("044 100 00 01"),
        customer_target("inst-silent", "cust-a", &silent_url),
    );
    b.routing.add(
        num("044 200 00 02"),
        customer_target("inst-healthy", "cust-b", &healthy.url()),
    );
    for i in 0..3 {
        b.pipeline
            .submit(event(&format!("a{i}"), CallState::Ringing, "044 100 00 01"))
            .await
            .unwrap();
    }
    let rt = b.runtime.clone();
    wait_until(
        "the silent app's breaker to open",
        Duration::from_secs(30),
        async || rt.installation_health("webhook", "inst-silent").0 == Status::Degraded,
    )
    .await;
    for i in 0..5 {
        b.pipeline
            .submit(event(&format!("b{i}"), CallState::Ringing, "044 200 00 02"))
            .await
            .unwrap();
    }
    wait_until(
        "5 deliveries to the healthy app",
        Duration::from_secs(10),
        async || healthy.received().len() >= 5,
    )
    .await;
    let outbox = b.pipeline.outbox().clone();
    wait_until(
        "the 5 outcomes to be recorded",
        Duration::from_secs(10),
        async || {
            let rows = outbox.recent(Some("cust-b"), 100).await.unwrap();
            rows.len() == 5 && rows.iter().all(|r| r.status == DeliveryStatus::Delivered)
        },
    )
    .await;
    let rows = outbox.recent(Some("cust-b"), 100).await.unwrap();
    for r in &rows {
        assert_eq!(
            (r.status, r.attempts),
            (DeliveryStatus::Delivered, 1),
            "the other customer's delivery waited on the breaker: {r:?}"
        );
    }
    assert_eq!(
        rt.installation_health("webhook", "inst-silent").0,
        Status::Degraded,
        "still open"
    );
    let info = rt.list().into_iter().find(|p| p.name == "webhook").unwrap();
    assert_eq!(info.status, Status::Active, "{info:?}");
    assert_eq!(
        info.last_error, None,
        "one customer's fault is not shown to all"
    );
    // The silent installation's next call is not attempted, and says why.
    let silent_inst = customer_target("inst-silent", "cust-a", &silent_url).installation;
    let d = leansync_host::plugins::Delivery {
        idempotency_key: "k".into(),
        attempt: 1,
    };
    let next = rt
        .on_call_event(
            &silent_inst,
            &event("a9", CallState::Ringing, "044 100 00 01"),
            None,
            &d,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        next.contains("degraded for installation inst-silent") && next.contains("deadline"),
        "{next}"
    );
    db.drop_db().await;
}

macro_rules! on_both_backends {
    ($($name:ident),*) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    routes_only_to_licensed_installations_in_call_order,
    a_failing_installation_retries_dies_and_is_redriven_without_delaying_others,
    pending_deliveries_survive_a_restart,
    a_revoked_license_stops_delivery
);
