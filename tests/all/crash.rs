//! Crash safety through the binary: SIGKILL during a stream of 1,000 events
//! loses no acknowledged event; each is delivered at least once, in call
//! order, duplicates only with the same idempotency key. SIGTERM stops
//! cleanly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leansync_tests::db::{Backend, TestDb};
use leansync_tests::host::{Host, Tenant, eventually};
use leansync_tests::receiver::Receiver;
use serde_json::{Value, json};

const CALLS: usize = 500; // two events each: ringing, missed

fn event(call: usize, state: &str, number: &str) -> Value {
    json!({
        "call_id": format!("crash-{call}"),
        "direction": "inbound",
        "state": state,
        "caller": "+41795550000",
        "callee": number,
        "monitored": number,
        "started_at_ms": 1_700_000_000_000u64 + call as u64,
        "ended_at_ms": if state == "missed" { Some(1_700_000_001_000u64) } else { None },
    })
}

#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    url: String,
    token: String,
    number: String,
}

impl Sender {
    async fn send(&self, call: usize, state: &str) -> bool {
        self.try_send(call, state).await.is_ok()
    }

    async fn try_send(&self, call: usize, state: &str) -> Result<(), String> {
        let resp = self
            .client
            .post(format!("{}/api/v1/ingest", self.url))
            .bearer_auth(&self.token)
            .json(&event(call, state, &self.number))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if resp.status() == 201 {
            return Ok(());
        }
        Err(format!(
            "{}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ))
    }
}

async fn sigkill_during_stream(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url = if matches!(backend, Backend::Sqlite) {
        String::new()
    } else {
        db.url.clone()
    };
    let mut h = Host::start(&url).await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "Crash AG",
        &["044 777 77 77"],
        &format!("{}/c", r.url()),
    )
    .await;

    // Eight senders, each owning calls; a call's events go in order and
    // only after the previous one was acknowledged.
    let acked = Arc::new(parking_lot::Mutex::new(HashSet::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let send = Sender {
        client: reqwest::Client::new(),
        url: h.url.clone(),
        token: h.token.clone(),
        number: t.number.clone(),
    };
    let mut tasks = Vec::new();
    for lane in 0..8 {
        let (acked, count, send) = (acked.clone(), count.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut unsent = Vec::new();
            for call in (lane..CALLS).step_by(8) {
                for state in ["ringing", "missed"] {
                    if send.send(call, state).await {
                        acked.lock().insert(format!("crash-{call}:{state}"));
                        count.fetch_add(1, Ordering::SeqCst);
                    } else {
                        unsent.push((call, state));
                    }
                }
            }
            unsent
        }));
    }
    // Kill mid-stream.
    eventually(Duration::from_secs(60), || {
        (count.load(Ordering::SeqCst) >= 400).then_some(())
    })
    .await
    .expect("400 events acknowledged");
    h.kill9();
    let acked_before_kill = count.load(Ordering::SeqCst);
    let mut unsent = Vec::new();
    for task in tasks {
        unsent.extend(task.await.unwrap());
    }
    // Restart on the same data and send what was never acknowledged.
    h.spawn().await;
    for (call, state) in unsent {
        if let Err(e) = send.try_send(call, state).await {
            panic!("resend after restart failed: {e}");
        }
        acked.lock().insert(format!("crash-{call}:{state}"));
    }
    let expected = acked.lock().clone();
    assert_eq!(expected.len(), 2 * CALLS);

    let delivered = eventually(Duration::from_secs(120), || {
        let got: HashSet<String> = r
            .received()
            .iter()
            .filter_map(|x| serde_json::from_slice::<Value>(&x.body).ok())
            .map(|v| {
                v["event"]["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        expected.is_subset(&got).then_some(got)
    })
    .await;
    let received = r.received();
    assert!(
        delivered.is_some(),
        "not every acknowledged event was delivered: {} of {} (acked before kill: {acked_before_kill})",
        received.len(),
        expected.len()
    );

    // Per-call order of first deliveries; duplicates carry one key.
    let mut first_seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for x in &received {
        let v: Value = serde_json::from_slice(&x.body).unwrap();
        let (id, call, state) = (
            v["event"]["event_id"].as_str().unwrap(),
            v["event"]["call_id"].as_str().unwrap(),
            v["event"]["state"].as_str().unwrap(),
        );
        let key = x.headers["idempotency-key"].to_str().unwrap().to_owned();
        if let Some(k) = keys.get(id) {
            assert_eq!(k, &key, "duplicate of {id} with another idempotency key");
            continue;
        }
        keys.insert(id.to_owned(), key);
        first_seen
            .entry(call.to_owned())
            .or_default()
            .push(state.to_owned());
    }
    for (call, states) in &first_seen {
        assert_eq!(states, &["ringing", "missed"], "order broken for {call}");
    }
    let duplicates = received.len() - keys.len();
    eprintln!(
        "acked before SIGKILL: {acked_before_kill}; deliveries {}; duplicates {duplicates}",
        received.len()
    );

    // SIGTERM: clean exit.
    assert!(h.terminate(), "SIGTERM should exit 0:\n{}", h.log());
    drop(h);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_1000_events_sqlite() {
    sigkill_during_stream(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_1000_events_postgres() {
    sigkill_during_stream(Backend::Postgres).await;
}
