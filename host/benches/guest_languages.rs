//! Cost of one `on-call-event` on the host's full path
//! (`PluginRuntime::on_call_event`) for the same connector written in Rust,
//! Python (componentize-py) and JavaScript (componentize-js) — the
//! `leansync plugin new --lang …` templates, which return at once for a
//! ringing event, so this is the price of the guest runtime alone — each
//! with a fresh instance per call made on the call path
//! (`warm_instances = 0`) and made ahead off it (`warm_instances = 2`, still
//! one call per instance).
//!
//! Run: `scripts/test-deps.sh` (installs the Python and JavaScript
//! toolchains under target/guest-tools), then
//! `cargo bench -p leansync-host --bench guest_languages`. Prints the
//! compile time of each component, then median and p99 per variant and the
//! ratio to the Rust guest measured in the same run. Calls are paced at 100
//! per second (a ringing line, not a flood) and the rounds interleave the
//! variants so machine noise hits all of them alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leansync_host::call::{CallEvent, CallState, Direction, now_ms};
use leansync_host::config::PluginLimits;
use leansync_host::number::E164;
use leansync_host::plugins::dev::build::{self, Lang};
use leansync_host::plugins::dev::scaffold;
use leansync_host::plugins::{Delivery, Installation, PluginRuntime};

const ROUNDS: usize = 3;
const CALLS_PER_ROUND: usize = 200;
const PACE: Duration = Duration::from_millis(10);

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let tools = root.join("target/guest-tools");
    let path = std::env::join_paths(
        [tools.join("py/bin"), tools.join("js/node_modules/.bin")]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    // SAFETY: single-threaded here, before any runtime or build starts.
    unsafe { std::env::set_var("PATH", path) };
    let scratch = std::env::temp_dir().join(format!("leansync-guests-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let limits = PluginLimits::default();

    let mut plugins: Vec<(&str, PathBuf)> = Vec::new();
    for (label, lang, name) in [
        ("rust", Lang::Rust, "bench-rs"),
        ("python", Lang::Python, "bench-py"),
        ("js", Lang::Js, "bench-js"),
    ] {
        let dir = scratch.join(name);
        scaffold::new_connector(name, lang, &dir, scaffold::default_sdk().as_deref()).unwrap();
        if lang == Lang::Rust {
            // Share the guests' target dir so the SDK is not rebuilt.
            // SAFETY: as above; builds run one after the other.
            unsafe { std::env::set_var("CARGO_TARGET_DIR", root.join("target/guests")) };
        }
        build::build(&dir, &limits).unwrap_or_else(|e| panic!("{label}: {e}"));
        plugins.push((label, dir));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One runtime per (language, strategy), each with its own compile cache
    // so the compile time is measured, not read from disk.
    let mut variants = Vec::new();
    for (label, dir) in &plugins {
        for warm in [0u32, 2] {
            let cache = scratch.join(format!("cache-{label}-{warm}"));
            let host = PluginRuntime::new(
                PluginLimits {
                    warm_instances: warm,
                    ..limits.clone()
                },
                &cache,
            )
            .unwrap();
            let t = Instant::now();
            let p = rt.block_on(async { host.install(dir) }).unwrap();
            let compile = t.elapsed();
            let size = std::fs::metadata(dir.join(&p.manifest.component))
                .unwrap()
                .len();
            if warm == 0 {
                println!(
                    "{label:6}: component {:.1} MB, compiled and loaded in {:.2} s",
                    size as f64 / 1e6,
                    compile.as_secs_f64()
                );
            }
            let inst = Arc::new(Installation {
                id: format!("bench-{label}"),
                customer_id: "bench".into(),
                plugin: p.manifest.name.clone(),
                config: serde_json::json!({ "base_url": "https://api.example.com" }),
                ..Default::default()
            });
            variants.push((
                format!("{label}, {}", strategy(warm)),
                host,
                inst,
                Vec::new(),
            ));
        }
    }
    let event = CallEvent {
        call_id: "bench".into(),
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
    rt.block_on(async {
        // Warm-up round (not recorded): first-call effects, warm pools filled.
        for round in 0..=ROUNDS {
            for _ in 0..CALLS_PER_ROUND {
                for (_, host, inst, samples) in variants.iter_mut() {
                    tokio::time::sleep(PACE / 6).await;
                    let t = Instant::now();
                    host.on_call_event(inst, &event, None, &delivery)
                        .await
                        .unwrap();
                    if round > 0 {
                        samples.push(t.elapsed());
                    }
                }
            }
        }
    });
    println!(
        "\n{ROUNDS} interleaved rounds of {CALLS_PER_ROUND} calls per variant, one call every {} ms per variant\n",
        PACE.as_millis()
    );
    println!("| guest, instances | median | p99 | median vs Rust (same strategy) |");
    println!("|---|---|---|---|");
    let stats: Vec<(String, Duration, Duration)> = variants
        .iter_mut()
        .map(|(name, _, _, s)| {
            s.sort();
            let q = |f: f64| s[((s.len() - 1) as f64 * f) as usize];
            (name.clone(), q(0.5), q(0.99))
        })
        .collect();
    for (i, (name, median, p99)) in stats.iter().enumerate() {
        let rust = stats[i % 2].1;
        println!(
            "| {name} | {} | {} | {:.1}x |",
            fmt(*median),
            fmt(*p99),
            median.as_secs_f64() / rust.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn strategy(warm: u32) -> &'static str {
    if warm == 0 {
        "fresh (made on the call path)"
    } else {
        "warm (made ahead, one call each)"
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}
