//! Pipeline throughput: simulated events through routing, the durable
//! outbox, and dispatch to a connector that only records the event.
//!
//! Run: `cargo bench -p leansync-host --bench pipeline_throughput [-- typed
//! | hosts]` after `scripts/build-plugins.sh`. Measures SQLite (temp file,
//! WAL, synchronous FULL) and PostgreSQL (127.0.0.1:5432, a fresh database;
//! skipped with a note if unreachable). Prints sustained events/s and the
//! event-to-plugin latency (submit → the plugin's `kv-set` host call)
//! median and p99. `typed`: the outbox on typed pools against sqlx `Any`;
//! `hosts`: 1, 2 and 3 hosts on one PostgreSQL database.

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
use leansync_host::store::Db;
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

/// What one round measured.
struct Round {
    /// Burst: events/s until the last reached the plugin.
    burst: f64,
    /// Paced at [`RATE`]: event→plugin median, p99, p99.9.
    latency: [Duration; 3],
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument picks the
    // comparison: none (SQLite and PostgreSQL against the bare plugin
    // call), `typed` (typed pools against sqlx `Any`, both databases) or
    // `hosts` (1, 2 and 3 hosts on one PostgreSQL database).
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempdir();
        println!(
            "pipeline_throughput {mode}: {EVENTS} events over {NUMBERS} numbers, 1 installation each"
        );
        match mode.as_str() {
            "typed" => typed_against_any(&dir).await,
            "hosts" => hosts(&dir).await,
            _ => {
                println!(
                    "| backend | burst events/s | event→plugin median at 5,000/s | p99 | p99.9 |"
                );
                println!("|---|---|---|---|---|");
                baseline(&dir).await;
                let sqlite = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
                print_round("sqlite", &run("sqlite", &sqlite, &dir, 1, false).await);
                match create_pg("lsbench").await {
                    Some(url) => print_round("postgres", &run("postgres", &url, &dir, 1, false).await),
                    None => println!("| postgres | skipped: no server at 127.0.0.1:5432 | | |"),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// `burst | median | p99 | p99.9 |` of a round, as table cells.
fn cells(r: &Round) -> String {
    format!(
        "{:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
        r.burst,
        r.latency[0].as_secs_f64() * 1e3,
        r.latency[1].as_secs_f64() * 1e3,
        r.latency[2].as_secs_f64() * 1e3
    )
}

fn print_round(name: &str, r: &Round) {
    println!("| {name} | {}", cells(r));
}

/// Median and (min, max) of `xs`.
fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

const ROUNDS: usize = 3;

/// The outbox on typed pools against the same outbox on sqlx `Any`,
/// rounds alternating, each on a fresh database.
async fn typed_against_any(dir: &std::path::Path) {
    println!("| backend | pools | round | burst events/s | median at 5,000/s | p99 | p99.9 |");
    println!("|---|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        let mut by: HashMap<bool, Vec<Round>> = HashMap::new();
        for round in 0..ROUNDS * 2 {
            let any = round % 2 == 0;
            let url = match backend {
                "sqlite" => format!(
                    "sqlite://{}?mode=rwc",
                    dir.join(format!("typed-{round}.db")).display()
                ),
                _ => match create_pg(&format!("lsbench_t{round}")).await {
                    Some(url) => url,
                    None => {
                        println!("| postgres | skipped: no server at 127.0.0.1:5432 |");
                        break;
                    }
                },
            };
            let r = run(&format!("{backend}{round}"), &url, dir, 1, any).await;
            println!(
                "| {backend} | {} | {} | {}",
                if any { "Any" } else { "typed" },
                round / 2 + 1,
                cells(&r)
            );
            by.entry(any).or_default().push(r);
        }
        summary(
            backend,
            &by,
            |any| if any { "Any" } else { "typed" },
            &false,
        );
    }
}

/// 1, 2 and 3 hosts (each its own pipeline, database pools, host id and
/// plugin runtime, as separate processes would have) on one PostgreSQL
/// database, events spread round-robin; rounds alternate, each on a fresh
/// database.
async fn hosts(dir: &std::path::Path) {
    println!("| hosts | round | burst events/s | median at 5,000/s | p99 | p99.9 |");
    println!("|---|---|---|---|---|---|");
    let mut by: HashMap<usize, Vec<Round>> = HashMap::new();
    for round in 0..ROUNDS * 3 {
        let n = round % 3 + 1;
        let Some(url) = create_pg(&format!("lsbench_h{round}")).await else {
            println!("| skipped: no server at 127.0.0.1:5432 |");
            return;
        };
        let r = run(&format!("h{round}"), &url, dir, n, false).await;
        println!("| {n} | {} | {}", round / 3 + 1, cells(&r));
        by.entry(n).or_default().push(r);
    }
    summary("postgres", &by, |n| format!("{n} host(s)"), &1);
}

/// Median and spread per variant, with the burst ratio to `base`.
fn summary<K: std::hash::Hash + Eq + Ord + Copy, L: std::fmt::Display>(
    backend: &str,
    by: &HashMap<K, Vec<Round>>,
    label: impl Fn(K) -> L,
    base: &K,
) {
    let Some(base_runs) = by.get(base) else {
        return;
    };
    let base_burst = median(base_runs.iter().map(|r| r.burst).collect()).0;
    let mut keys: Vec<&K> = by.keys().collect();
    keys.sort();
    for k in keys {
        let rs = &by[k];
        let (b, bmin, bmax) = median(rs.iter().map(|r| r.burst).collect());
        let (p99, p99min, p99max) = median(
            rs.iter()
                .map(|r| r.latency[1].as_secs_f64() * 1e3)
                .collect(),
        );
        let med = median(
            rs.iter()
                .map(|r| r.latency[0].as_secs_f64() * 1e3)
                .collect(),
        )
        .0;
        println!(
            "{backend} {}: burst median {b:.0} events/s ({bmin:.0}–{bmax:.0}), ratio {:.2}; paced median {med:.2} ms, p99 median {p99:.2} ms ({p99min:.2}–{p99max:.2}); {} rounds",
            label(*k),
            b / base_burst,
            rs.len()
        );
    }
}

/// One round: `hosts` pipelines on `url`, each with its own outbox and
/// plugin runtime; with `any`, the outbox uses sqlx `Any` only.
async fn run(name: &str, url: &str, dir: &std::path::Path, hosts: usize, any: bool) -> Round {
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
    let stamps = Arc::new(Stamps::default());
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
    let mut senders = Vec::new();
    let mut pipelines = Vec::new();
    for h in 0..hosts {
        let runtime = PluginRuntime::new(PluginLimits::default(), &dir.join("cache")).unwrap();
        assert!(runtime.reload_dir(&plugins).failed.is_empty());
        runtime.set_services(stamps.clone());
        let mut db = Db::connect(url).await.unwrap();
        if any {
            db = db.any_only();
        }
        let outbox = Outbox::open(db)
            .await
            .unwrap()
            .with_host(&format!("{name}-host{h}"));
        let pipeline = Pipeline::start(outbox, runtime, routing.clone(), Settings::default())
            .await
            .unwrap();
        senders.push(pipeline.events());
        pipelines.push(pipeline);
    }
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
            answered_by: None,
        }
    };
    // Phase 1: a burst of EVENTS as fast as they can be sent: sustained
    // throughput until the last one reached the plugin.
    let start = Instant::now();
    for i in 0..EVENTS {
        senders[i % hosts].send(event(i, "burst")).await.unwrap();
    }
    wait_for(&stamps, EVENTS).await;
    let burst = EVENTS as f64 / start.elapsed().as_secs_f64();

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
        senders[i % hosts].send(ev).await.unwrap();
    }
    wait_for(&stamps, EVENTS + PACED).await;
    let mut lat: Vec<Duration> = {
        let seen = stamps.0.lock();
        sent.iter()
            .filter_map(|(id, t0)| {
                seen.get(&format!("seen:{id}"))
                    .map(|t| t.duration_since(*t0))
            })
            .collect()
    };
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    for p in pipelines {
        let _ = p.release().await;
        p.outbox().db().close().await;
    }
    Round {
        burst,
        latency: [p(0.5), p(0.99), p(0.999)],
    }
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
                    answered_by: None,
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

async fn create_pg(prefix: &str) -> Option<String> {
    use sqlx::Connection;
    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
    let name = format!("{prefix}_{}", std::process::id());
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
