//! Cost of delivering one call event to one plugin.
//!
//! (a) the host's full path (`PluginRuntime::on_call_event`: sandbox state,
//!     deadline, memory cap, conversion, health accounting) with
//!     `warm_instances = 2`: a warm instance made off the call path (by the
//!     runtime's other worker thread) serves the call,
//! (a0) the same with `warm_instances = 0` (the default): instantiation on
//!     the call path,
//! (b) bare wasmtime doing the same work — a fresh store from a cached
//!     `InstancePre` plus one call of the same export, same engine settings
//!     (pooling, epochs) — the physical-limit baseline,
//! (c) a call on a reused instance, for reference.
//!
//! Run: `cargo bench -p leansync-host --bench plugin_invoke` after
//! `scripts/build-plugins.sh`. Prints median and p99 per variant and the
//! ratio (a)/(b), twice: calls back to back (throughput-bound: instantiation
//! is paid on some core for every call, so warm instances cannot help) and
//! paced at 1,000 calls/s (the latency a call sees on a host that is not
//! saturated). The rounds interleave the variants so machine noise hits all
//! of them alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leansync_host::call::{CallEvent, CallState, Direction, now_ms};
use leansync_host::config::PluginLimits;
use leansync_host::number::E164;
use leansync_host::plugins::api::v1_1_0;
use leansync_host::plugins::engine::build_engine;
use leansync_host::plugins::{Delivery, Installation, PluginRuntime};
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

const ITERS: usize = 20_000;
const ROUNDS: usize = 5;
/// Iterations per round when paced at 1,000 per second (a busy host's rate).
const PACED_ITERS: usize = 3_000;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let plugin_dir = root.join("tests/plugins/noop");
    let wasm = plugin_dir.join("noop.wasm");
    assert!(
        wasm.is_file(),
        "{} missing: run scripts/build-plugins.sh",
        wasm.display()
    );
    // Two workers, as the host runs: warm instances are refilled on the
    // worker that is not serving the call.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limits = PluginLimits::default();
    let scratch = std::env::temp_dir().join(format!("leansync-bench-{}", std::process::id()));

    // (a) the host
    let host = PluginRuntime::new(
        PluginLimits {
            warm_instances: 2,
            ..limits.clone()
        },
        &scratch,
    )
    .unwrap();
    let cold_limits = PluginLimits {
        warm_instances: 0,
        ..limits.clone()
    };
    let host_cold = PluginRuntime::new(cold_limits, &scratch.join("cold")).unwrap();
    let plugins = scratch.join("plugins");
    std::fs::create_dir_all(plugins.join("noop")).unwrap();
    for f in ["plugin.toml", "noop.wasm"] {
        std::fs::copy(plugin_dir.join(f), plugins.join("noop").join(f)).unwrap();
    }
    rt.block_on(async {
        assert!(host.reload_dir(&plugins).failed.is_empty());
        assert!(host_cold.reload_dir(&plugins).failed.is_empty());
    });
    let inst = Arc::new(Installation {
        id: "bench".into(),
        plugin: "noop".into(),
        config: serde_json::json!({}),
        ..Default::default()
    });
    let event = CallEvent {
        call_id: "bench-call".into(),
        direction: Direction::Inbound,
        state: CallState::Ringing,
        caller: Some(E164::parse("+41791234567").unwrap()),
        callee: E164::parse("+41441234567").unwrap(),
        monitored: E164::parse("+41441234567").unwrap(),
        started_at_ms: now_ms(),
        answered_at_ms: None,
        ended_at_ms: None,
        duration_secs: None,
        answered_by: None,
    };
    let delivery = Delivery {
        idempotency_key: "bench".into(),
        attempt: 1,
    };

    // (b) and (c): bare wasmtime, same engine settings, imports stubbed.
    let engine = build_engine(&limits).unwrap();
    let component = Component::from_file(&engine, &wasm).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = v1_1_0::PluginPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let wit_event = v1_1_0::to_wit(&event, "bench", None);
    let wit_delivery = v1_1_0::types::Delivery {
        idempotency_key: "bench".into(),
        attempt: 1,
    };
    let bare_store = || {
        let mut s = Store::new(&engine, ());
        s.set_epoch_deadline(u64::MAX / 2);
        s
    };
    let mut reused_store = bare_store();
    let reused = rt
        .block_on(pre.instantiate_async(&mut reused_store))
        .unwrap();

    // One interleaved measurement: every iteration times (a), (a0), (b), (c)
    // once; `pace` spaces iterations out (None: back to back).
    let mut measure = |iters: usize, pace: Option<Duration>| {
        let mut a = Vec::with_capacity(iters * ROUNDS);
        let mut a0 = Vec::with_capacity(iters * ROUNDS);
        let mut b = Vec::with_capacity(iters * ROUNDS);
        let mut c = Vec::with_capacity(iters * ROUNDS);
        rt.block_on(async {
            let mut tick = pace.map(tokio::time::interval);
            for round in 0..=ROUNDS {
                let warmup = round == 0;
                for _ in 0..iters {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    let t = Instant::now();
                    host.on_call_event(&inst, &event, None, &delivery)
                        .await
                        .unwrap();
                    let da = t.elapsed();

                    let t = Instant::now();
                    host_cold
                        .on_call_event(&inst, &event, None, &delivery)
                        .await
                        .unwrap();
                    let da0 = t.elapsed();

                    let t = Instant::now();
                    let mut store = bare_store();
                    let i = pre.instantiate_async(&mut store).await.unwrap();
                    i.leansync_connector_connector()
                        .call_on_call_event(&mut store, &wit_event, &wit_delivery)
                        .await
                        .unwrap()
                        .unwrap();
                    drop(store);
                    let db = t.elapsed();

                    let t = Instant::now();
                    reused
                        .leansync_connector_connector()
                        .call_on_call_event(&mut reused_store, &wit_event, &wit_delivery)
                        .await
                        .unwrap()
                        .unwrap();
                    let dc = t.elapsed();
                    if !warmup {
                        a.push(da);
                        a0.push(da0);
                        b.push(db);
                        c.push(dc);
                    }
                }
            }
        });
        [a, a0, b, c].map(|mut v| stats(&mut v))
    };
    let tight = measure(ITERS, None);
    let paced = measure(PACED_ITERS, Some(Duration::from_millis(1)));
    println!(
        "plugin_invoke: {ROUNDS} rounds, {} cores; back to back: {ITERS} iterations per round; paced: {PACED_ITERS} per round, one every 1 ms",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| variant | back to back: median | p99 | paced 1,000/s: median | p99 |");
    println!("|---|---|---|---|---|");
    let names = [
        "(a) host on_call_event, warm_instances = 2",
        "(a0) host on_call_event, warm_instances = 0 (default)",
        "(b) bare wasmtime: fresh store from InstancePre + call",
        "(c) bare wasmtime: call on reused instance",
    ];
    for (i, name) in names.iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} | {} |",
            us(tight[i].0),
            us(tight[i].1),
            us(paced[i].0),
            us(paced[i].1)
        );
    }
    for (label, r) in [("back to back", &tight), ("paced", &paced)] {
        let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
        println!(
            "{label}: (a)/(b) median {:.2}x, p99 {:.2}x; (a0)/(b) median {:.2}x, p99 {:.2}x",
            ratio(r[0].0, r[2].0),
            ratio(r[0].1, r[2].1),
            ratio(r[1].0, r[2].0),
            ratio(r[1].1, r[2].1)
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn stats(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
