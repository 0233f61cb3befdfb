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

const EVENTS: usize = 20_000;
const NUMBERS: usize = 100;

/// Records when the plugin saw each event (its kv-set call).
#[derive(Default)]
struct Stamps(Mutex<HashMap<String, Instant>>);

impl HostServices for Stamps {
    fn kv_get(&self, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn kv_set(&self, _: &str, key: &str, _: Vec<u8>, _: Option<u32>) -> Result<(), String> {
        self.0
            .lock()
            .entry(key.to_owned())
            .or_insert_with(Instant::now);
        Ok(())
    }
    fn kv_delete(&self, _: &str, _: &str) {}
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
        println!("| backend | events/s | event→plugin median | p99 |");
        println!("|---|---|---|---|");
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
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(EVENTS);
    let start = Instant::now();
    for i in 0..EVENTS {
        let n = &numbers[i % NUMBERS];
        let ev = CallEvent {
            call_id: format!("{name}-call{i}"),
            direction: Direction::Inbound,
            state: CallState::Ringing,
            caller: Some(E164::parse("+41791234567").unwrap()),
            callee: n.clone(),
            monitored: n.clone(),
            started_at_ms: now_ms(),
            answered_at_ms: None,
            ended_at_ms: None,
            duration_secs: None,
        };
        sent.insert(ev.event_id(), Instant::now());
        tx.send(ev).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while stamps.0.lock().len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} delivered",
            stamps.0.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let seen = stamps.0.lock();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, t0)| {
            seen.get(&format!("seen:{id}"))
                .map(|t| t.duration_since(*t0))
        })
        .collect();
    lat.sort();
    let p = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)];
    println!(
        "| {name} | {:.0} | {:.2} ms | {:.2} ms |",
        EVENTS as f64 / elapsed.as_secs_f64(),
        p(50).as_secs_f64() * 1e3,
        p(99).as_secs_f64() * 1e3
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
