//! `POST /api/v1/calls` under load from a second process (wrk), on the
//! `sim` provider, against a bare axum handler of the same route on the
//! same machine in the same run (the ceiling).
//!
//! Run: `cargo bench -p leansync-host --bench calls_load` (needs `wrk`:
//! `apt-get install -y wrk`; scripts/test-deps.sh installs it).

use std::time::Duration;

use leansync_host::app::App;
use leansync_host::config::Config;
use leansync_host::licensing::{Actor, NewInstallation};

const SECONDS: u32 = 10;

fn wrk(url: &str, key: &str, dir: &std::path::Path) -> (f64, String, String) {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.body = '{{\"to\":\"044 999 88 77\"}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"),
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
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_addr = bare_listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(bare_listener, bare).await.unwrap() });

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
        let app = App::build(config).await.unwrap();
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(200)).await;

        let key = key.expose().to_owned();
        let d = dir.clone();
        let (bare_rps, bare_p50, bare_p99) = tokio::task::spawn_blocking({
            let d = d.clone();
            let key = key.clone();
            move || wrk(&format!("http://{bare_addr}/api/v1/calls"), &key, &d)
        })
        .await
        .unwrap();
        let (rps, p50, p99) = tokio::task::spawn_blocking(move || wrk(&format!("http://{addr}/api/v1/calls"), &key, &d)).await.unwrap();
        println!("POST /api/v1/calls, wrk -t2 -c32 -d{SECONDS}s from a second process");
        println!("| server | requests/s | p50 | p99 |");
        println!("|---|---|---|---|");
        println!("| bare axum handler (ceiling) | {bare_rps:.0} | {bare_p50} | {bare_p99} |");
        println!("| leansync (key check, policy, rate limit, sim originate + its events stored and delivered) | {rps:.0} | {p50} | {p99} |");
        println!("ratio leansync / ceiling: {:.2}", rps / bare_rps);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(0);
    });
}
