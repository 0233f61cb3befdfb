//! Pipeline throughput: simulated events through routing, the durable
//! outbox, and dispatch to a connector that only records the event.
//!
//! Run: `cargo bench -p leansync-host --bench pipeline_throughput` after
//! `scripts/build-plugins.sh`. Measures SQLite (temp file, WAL, synchronous
//! FULL) and PostgreSQL (127.0.0.1:5432, a fresh database; skipped with a
//! note if unreachable). Prints sustained events/s and the event-to-plugin
//! latency (submit → the plugin's `kv-set` host call) median and p99.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use leansync_host::call::{CallEvent, CallState, Direction, now_ms};
use leansync_host::config::PluginLimits;
use leansync_host::number::E164;
use leansync_host::pipeline::routing::StaticRouting;
use leansync_host::pipeline::{Outbox, Pipeline, Settings, Target};
use leansync_host::plugins::{HostServices, Installation, PluginRuntime};
use parking_lot::Mutex;

/// The allocator of the `leansync` binary, so the pipeline runs as served.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 20_000;
const NUMBERS: usize = 100;
const RATE: usize = 5_000;
const PACED: usize = 20_000;

/// Records when the plugin saw each event (its kv-set call).
#[derive(Default)]
struct Stamps(Mutex<HashMap<String, Instant>>);

impl HostServices for Stamps {
    fn kv_get(&self, _: &str, _: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        Box::pin(std::future::ready(None))
    }
    fn kv_set(
        &self,
        _: &str,
        key: &str,
        _: Vec<u8>,
        _: Option<u32>,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.0
            .lock()
            .entry(key.to_owned())
            .or_insert_with(Instant::now);
        Box::pin(std::future::ready(Ok(())))
    }
    fn kv_delete(&self, _: &str, _: &str) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
    fn place_call(
        &self,
        _: &Installation,
        _: String,
        _: String,
    ) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("no".into()) })
    }
    fn push_to_screen(&self, _: &Installation, _: CallEvent) {}
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempdir();
        println!(
            "pipeline_throughput: {EVENTS} events over {NUMBERS} numbers, 1 installation each"
        );
        println!("| backend | burst events/s | event→plugin median at 5,000/s | p99 | p99.9 |");
        println!("|---|---|---|---|---|");
        baseline(&dir).await;
        run(
            "sqlite",
            &format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
            &dir,
        )
        .await;
        match create_pg().await {
            Some(url) => run("postgres", &url, &dir).await,
            None => println!("| postgres | skipped: no server at 127.0.0.1:5432 | | |"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

async fn run(name: &str, url: &str, dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let plugins = dir.join(format!("plugins-{name}"));
    std::fs::create_dir_all(plugins.join("healthy")).unwrap();
    for f in ["plugin.toml", "healthy.wasm"] {
        std::fs::copy(
            root.join("tests/plugins/healthy").join(f),
            plugins.join("healthy").join(f),
        )
        .unwrap_or_else(|e| panic!("tests/plugins/healthy/{f}: {e}; run scripts/build-plugins.sh"));
    }
    let runtime = PluginRuntime::new(PluginLimits::default(), &dir.join("cache")).unwrap();
    assert!(runtime.reload_dir(&plugins).failed.is_empty());
    let stamps = Arc::new(Stamps::default());
    runtime.set_services(stamps.clone());
    let routing = Arc::new(StaticRouting::default());
    let numbers: Vec<E164> = (0..NUMBERS)
        .map(|i| E164::parse(&format!("+4144{:07}", 2_000_000 + i)).unwrap())
        .collect();
    for (i, n) in numbers.iter().enumerate() {
        routing.add(
            n.clone(),
            Target {
                license_id: format!("lic{i}"),
                customer_id: format!("cust{}", i % 10),
                installation: Arc::new(Installation {
                    id: format!("inst{i}"),
                    plugin: "healthy".into(),
                    config: serde_json::json!({}),
                    ..Default::default()
                }),
                deliver_internal: false,
                lookup: false,
            },
        );
    }
    let outbox = Outbox::connect(url).await.unwrap();
    let pipeline = Pipeline::start(outbox, runtime, routing, Settings::default())
        .await
        .unwrap();
    let tx = pipeline.events();
    let event = |i: usize, tag: &str| {
        let n = &numbers[i % NUMBERS];
        CallEvent {
            call_id: format!("{name}-{tag}-call{i}"),
            direction: Direction::Inbound,
            state: CallState::Ringing,
            caller: Some(E164::parse("+41791234567").unwrap()),
            callee: n.clone(),
            monitored: n.clone(),
            started_at_ms: now_ms(),
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
        }
    };
    // Phase 1: a burst of EVENTS as fast as they can be sent: sustained
    // throughput until the last one reached the plugin.
    let start = Instant::now();
    for i in 0..EVENTS {
        tx.send(event(i, "burst")).await.unwrap();
    }
    wait_for(&stamps, EVENTS).await;
    let throughput = EVENTS as f64 / start.elapsed().as_secs_f64();

    // Phase 2: latency at a steady 5,000 events/s (the target rate) for 4 s.
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(PACED);
    let start = Instant::now();
    for i in 0..PACED {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let ev = event(i, "paced");
        sent.push((ev.event_id(), Instant::now()));
        tx.send(ev).await.unwrap();
    }
    wait_for(&stamps, EVENTS + PACED).await;
    let seen = stamps.0.lock();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, t0)| {
            seen.get(&format!("seen:{id}"))
                .map(|t| t.duration_since(*t0))
        })
        .collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
        throughput,
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        p(0.999).as_secs_f64() * 1e3
    );
}

async fn wait_for(stamps: &Stamps, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while stamps.0.lock().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            stamps.0.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Baseline: the same plugin export called directly, 4 at a time, with no
/// routing and no store: the ceiling the pipeline is measured against.
async fn baseline(dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let plugins = dir.join("plugins-baseline");
    std::fs::create_dir_all(plugins.join("healthy")).unwrap();
    for f in ["plugin.toml", "healthy.wasm"] {
        std::fs::copy(
            root.join("tests/plugins/healthy").join(f),
            plugins.join("healthy").join(f),
        )
        .unwrap();
    }
    let runtime = PluginRuntime::new(PluginLimits::default(), &dir.join("cache")).unwrap();
    assert!(runtime.reload_dir(&plugins).failed.is_empty());
    runtime.set_services(Arc::new(Stamps::default()));
    let inst = Arc::new(Installation {
        id: "inst".into(),
        plugin: "healthy".into(),
        config: serde_json::json!({}),
        ..Default::default()
    });
    let n = E164::parse("+41442000000").unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let (runtime, inst, n) = (runtime.clone(), inst.clone(), n.clone());
        tasks.push(tokio::spawn(async move {
            for i in (lane..EVENTS).step_by(4) {
                let ev = CallEvent {
                    call_id: format!("b{i}"),
                    direction: Direction::Inbound,
                    state: CallState::Ringing,
                    caller: None,
                    callee: n.clone(),
                    monitored: n.clone(),
                    started_at_ms: now_ms(),
                    answered_at_ms: None,
                    ended_at_ms: None,
                    duration_secs: None,
                };
                let d = leansync_host::plugins::Delivery {
                    idempotency_key: format!("k{i}"),
                    attempt: 1,
                };
                runtime.on_call_event(&inst, &ev, None, &d).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "| baseline: plugin export called directly, no store | {:.0} | | | |",
        EVENTS as f64 / start.elapsed().as_secs_f64()
    );
}

async fn create_pg() -> Option<String> {
    use sqlx::Connection;
    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
    let name = format!("lsbench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    Some(format!("postgres://postgres@127.0.0.1:5432/{name}"))
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("leansync-pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
