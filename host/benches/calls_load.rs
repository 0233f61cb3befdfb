//! `POST /api/v1/calls` under load from a second process (wrk), on the
//! `sim` provider, against a bare axum handler of the same route on the
//! same machine in the same run (the ceiling).
//!
//! Three servers, each measured with the same wrk run (every request dials
//! another Zurich number, so nothing about one destination is reused):
//! 1. a bare axum handler: parse the JSON, answer 202 with a call id;
//! 2. the host's click-to-call path: the business-API router with the
//!    key check, dial policy, rate limits and origination on a `sim` PBX,
//!    whose call events go nowhere (the request's own cost);
//! 3. the host as `leansync serve` runs it: the same, plus each simulated
//!    call's events (ringing at once, answered 3 s later) stored durably in
//!    SQLite and delivered by the `webhook` connector to a receiver in this
//!    process, on the same two cores as wrk.
//!
//! Run: `cargo bench -p leansync-host --bench calls_load` (needs `wrk`:
//! `apt-get install -y wrk`; scripts/test-deps.sh installs it).

use std::sync::Arc;
use std::time::Duration;

use leansync_host::api::business::{BusinessApi, router};
use leansync_host::app::App;
use leansync_host::config::Config;
use leansync_host::dialing::ClickToCall;
use leansync_host::licensing::{Actor, NewInstallation};
use leansync_host::telephony::sim::SimProvider;
use leansync_host::wiring::Telephony;

/// The allocator of the `leansync` binary, so the host here runs as served.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECONDS: u32 = 10;

/// wrk's result: requests/s, p50 (with any non-2xx count), p99.
fn wrk(url: &str, key: &str, dir: &std::path::Path) -> (f64, String, String) {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local n = 0
request = function()
  n = n + 1
  local digits = string.format("%07d", (n * 7919 + math.random(0, 7918)) % 10000000)
  return wrk.format(nil, nil, nil, '{{"to":"044 ' .. digits:sub(1, 3) .. ' ' .. digits:sub(4, 5) .. ' ' .. digits:sub(6, 7) .. '"}}')
end
"#
        ),
    )
    .unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{SECONDS}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk is required: apt-get install -y wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map(|v| v.trim().parse().unwrap_or(0.0))
        .unwrap_or(0.0);
    let pct = |p: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(p))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
            .unwrap_or_else(|| "?".into())
    };
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map(|l| format!(" ({})", l.trim()))
        .unwrap_or_default();
    (rps, format!("{}{non2xx}", pct("50%")), pct("99%"))
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("leansync-calls-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();

        // Bare axum: the same route, JSON in, JSON out, nothing else.
        let bare = axum::Router::new()
            .route(
                "/api/v1/calls",
                axum::routing::post(|axum::Json(v): axum::Json<serde_json::Value>| async move {
                    (axum::http::StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "call_id": uuid::Uuid::now_v7().to_string(), "to": v["to"] })))
                }),
            )
            .route("/hook", axum::routing::post(|| async { "{}" }));
        let bare_addr = serve(bare).await;

        // The host on its defaults (SQLite, sim), limits opened for load.
        let mut config = Config {
            data_dir: dir.join("data"),
            plugins_dir: root.join("plugins"),
            ..Default::default()
        };
        config.dialing.per_key_per_minute = 1e9;
        config.dialing.per_key_burst = 1e9;
        config.dialing.per_customer_per_minute = 1e9;
        config.dialing.per_customer_burst = 1e9;
        config.dialing.block_after_attempts = usize::MAX;
        // The receiver listens on loopback: the operator setting that allows it.
        config.plugins.allow_networks = vec!["127.0.0.0/8".into()];
        let app = App::build(config.clone()).await.unwrap();
        let op = Actor::system();
        let l = &app.licensing;
        let c = l.create_customer(&op, "Bench AG").await.unwrap();
        l.add_numbers(&op, &c.id, &["044 123 45 67".into()]).await.unwrap();
        let inst = l
            .create_installation(&op, &c.id, NewInstallation { connector: "webhook".into(), config: serde_json::json!({ "url": format!("http://{bare_addr}/hook") }), granted_hosts: vec!["127.0.0.1".into()], deliver_internal: false })
            .await
            .unwrap();
        let lic = l.order_licenses(&op, &inst.id, 1).await.unwrap();
        let (_, key) = l.provision(&op, &lic[0].id).await.unwrap();
        l.assign(&op, &lic[0].id, "044 123 45 67").await.unwrap();
        let host_addr = serve(app.router()).await;

        // The click-to-call path alone: the same key resolution, policy and
        // rate limits, originating on a sim PBX whose events are dropped.
        let (events, mut dropped) = tokio::sync::mpsc::channel(10_000);
        tokio::spawn(async move { while dropped.recv().await.is_some() {} });
        let sim = Arc::new(SimProvider::new(events));
        let dialer = ClickToCall::new(
            config.dialing.clone(),
            Arc::new(app.licensed.clone()),
            Arc::new(Telephony(sim)),
        );
        let path_addr = serve(router(BusinessApi {
            pipeline: app.pipeline.clone(),
            keys: Arc::new(app.licensed.clone()),
            dialer: Arc::new(dialer),
            routing: Arc::new(app.licensed.clone()),
            plugins: app.plugins.clone(),
            webhook_limits: Default::default(),
        }))
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let key = key.expose().to_owned();
        let run = |addr: std::net::SocketAddr| {
            let (d, key) = (dir.clone(), key.clone());
            tokio::task::spawn_blocking(move || wrk(&format!("http://{addr}/api/v1/calls"), &key, &d))
        };
        let bare = run(bare_addr).await.unwrap();
        let path = run(path_addr).await.unwrap();
        // Last: its simulated calls go on producing events after wrk stops.
        let host = run(host_addr).await.unwrap();
        println!("POST /api/v1/calls, wrk -t2 -c32 -d{SECONDS}s from a second process, a new destination per request");
        println!("| server | requests/s | p50 | p99 | / ceiling |");
        println!("|---|---|---|---|---|");
        for (name, (rps, p50, p99)) in [
            ("bare axum handler (ceiling)", &bare),
            ("leansync click-to-call path (key, policy, rate limits, sim originate; events dropped)", &path),
            ("leansync as served (the same, plus each call's events stored and delivered to the webhook connector)", &host),
        ] {
            println!("| {name} | {rps:.0} | {p50} | {p99} | {:.2} |", rps / bare.0);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(0);
    });
}
