//! SIP monitoring under load: SIPp places calls spread over many numbers
//! through the Kamailio bench (tests/sip/bench.sh) while the host watches
//! every number with a dialog subscription; every ringing event must reach
//! the webhook connector. Kamailio's own maximum rate, with the same config
//! and nobody watching, is measured first in the same run as the reference.
//!
//! Latency: `load_call.xml` logs the wall clock (µs) just before each INVITE
//! leaves SIPp, with its Call-ID; the host's ringing event carries the same
//! Call-ID (`sip-<Call-ID>`) and `started_at_ms`, the wall clock (ms) at
//! which the provider produced the normalised event. Two latencies:
//! INVITE → normalised event (`started_at_ms`, 1 ms resolution) and
//! INVITE → webhook received by this program (µs; adds the durable
//! pipeline and the connector).
//!
//! Run (release host, as for the other benches):
//!   cargo build --release -p leansync-host && ./scripts/build-plugins.sh
//!   cargo bench -p leansync-tests --bench sip_load
//! Environment: SIP_LOAD_NUMBERS (100), SIP_LOAD_RATE (200 calls/s),
//! SIP_LOAD_SECONDS (15 per round), SIP_LOAD_ROUNDS (3),
//! SIP_LOAD_RAMP (extra host rates, "300,400"), SIP_LOAD_BASELINE_RATES
//! ("200,300,400,500,600,800"), KAMAILIO_SHM (512 MB), KAMAILIO_CHILDREN (2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leansync_tests::host::{Host, Tenant, free_port};
use leansync_tests::plugins::repo_root;
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<u32> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bench Kamailio with the monitored numbers registered to one SIPp phone
/// (the user's CPU time is read from /proc to attribute the load).
struct Pbx {
    dir: tempfile::TempDir,
    port: u16,
    phone_port: u16,
}

impl Pbx {
    fn start(users: &[String]) -> Pbx {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<String> = users.iter().map(|u| format!("{u}:pw")).collect();
        all.push("leansync:monpw".into());
        let out = Command::new(repo_root().join("tests/sip/bench.sh"))
            .arg("start")
            .arg(dir.path().join("pbx"))
            .env("USERS", all.join(" "))
            .env(
                "KAMAILIO_SHM",
                std::env::var("KAMAILIO_SHM").unwrap_or_else(|_| "512".into()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bench.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("PORT="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pbx = Pbx {
            dir,
            port,
            phone_port: free_port(),
        };
        // Every number's contact is the one phone on phone_port; 25
        // registrations at a time, each SIPp on its own port (a port taken
        // meanwhile for UDP fails one: it is tried again).
        let register = |u: &str| {
            Command::new("timeout")
                .args(["20", "sipp", "-sf"])
                .arg(scenario("register.xml"))
                .args(["-s", u, "-au", u, "-ap", "pw", "-i", "127.0.0.1"])
                .args(["-set", "contact_port", &pbx.phone_port.to_string()])
                .args(["-p", &free_port().to_string(), "-m", "1", "-nostdin"])
                .arg(pbx.addr())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        for batch in users.chunks(25) {
            let children: Vec<(&String, Child)> = batch.iter().map(|u| (u, register(u))).collect();
            for (u, mut child) in children {
                let ok = child.wait().unwrap().success()
                    || (0..3).any(|_| register(u).wait().unwrap().success());
                assert!(ok, "{u} could not register");
            }
        }
        pbx
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn work(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// CPU seconds used so far by the Kamailio processes.
    fn cpu_seconds(&self) -> f64 {
        let pgid = std::fs::read_to_string(self.dir.path().join("pbx/kamailio.pgid")).unwrap();
        cpu_seconds(
            |stat| stat.get(2).map(String::as_str) == Some(pgid.trim()),
            |_| true,
        )
    }
}

/// CPU seconds (user + system) of the processes whose /proc stat fields
/// (after the command name) match `stat` and whose environment matches `env`.
fn cpu_seconds(stat: impl Fn(&[String]) -> bool, env: impl Fn(&[u8]) -> bool) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some(after) = text.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<String> = after.split_whitespace().map(str::to_owned).collect();
        if fields.len() < 13 || !stat(&fields) {
            continue;
        }
        if !env(&std::fs::read(dir.join("environ")).unwrap_or_default()) {
            continue;
        }
        let utime: f64 = fields[11].parse().unwrap_or(0.0);
        let stime: f64 = fields[12].parse().unwrap_or(0.0);
        total += (utime + stime) / tick;
    }
    total
}

/// CPU seconds of the host process serving `data_dir`.
fn host_cpu_seconds(data_dir: &Path) -> f64 {
    let marker = format!("LEANSYNC_DATA_DIR={}", data_dir.display());
    cpu_seconds(
        |_| true,
        |env| env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()),
    )
}

impl Drop for Pbx {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/sip/bench.sh"))
            .arg("stop")
            .arg(self.dir.path().join("pbx"))
            .status();
    }
}

fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/sip/scenarios").join(name)
}

/// What SIPp saw of one round.
struct Round {
    /// Call-ID → when its INVITE left SIPp (µs since the epoch).
    sent: HashMap<String, u64>,
    successful: u64,
    failed: u64,
    achieved_cps: f64,
}

fn stat(text: &str, name: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.rsplit('|').next())
        .map(|v| v.trim().to_owned())
}

/// Places `rate × seconds` answered calls (100 ms talk), round-robin over
/// `users`.
fn place_calls(pbx: &Pbx, users: &[String], rate: u32, seconds: u32, tag: &str) -> Round {
    let dir = pbx.work();
    let callees = dir.join("callees.csv");
    let mut csv = String::from("SEQUENTIAL\n");
    for u in users {
        csv.push_str(&format!("{u};\n"));
    }
    std::fs::write(&callees, csv).unwrap();
    let log = dir.join(format!("sent-{tag}.log"));
    let limit = format!("{}s", seconds + 60);
    let _phone = Killed(
        Command::new("sipp")
            .arg("-sf")
            .arg(scenario("uas_answer.xml"))
            .args(["-i", "127.0.0.1", "-p", &pbx.phone_port.to_string()])
            .args(["-d", "0", "-nostdin", "-timeout", &limit, "-timeout_error"])
            .arg(pbx.addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let calls = rate * seconds;
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("load_call.xml"))
        .arg("-inf")
        .arg(&callees)
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
        .args([
            "-d",
            "100",
            "-r",
            &rate.to_string(),
            "-m",
            &calls.to_string(),
        ])
        .args(["-nostdin", "-timeout", &limit, "-trace_logs", "-log_file"])
        .arg(&log)
        .arg(pbx.addr())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    let sent = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("SENT ")?.split_whitespace();
            let call_id = f.next()?.to_owned();
            let s: f64 = f.next()?.parse().ok()?;
            let us: f64 = f.next()?.parse().ok()?;
            Some((call_id, s as u64 * 1_000_000 + us as u64))
        })
        .collect();
    Round {
        sent,
        successful: stat(&screen, "Successful call")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        failed: stat(&screen, "Failed call")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        achieved_cps: stat(&screen, "Call Rate")
            .and_then(|v| v.trim_end_matches("cps").trim().parse().ok())
            .unwrap_or(0.0),
    }
}

/// A ringing event as the webhook delivered it.
#[derive(Clone)]
struct Seen {
    started_at_ms: u64,
    received_us: u64,
}

/// Records every ringing event the webhook connector delivers.
async fn receiver() -> (String, Arc<Mutex<HashMap<String, Vec<Seen>>>>) {
    let seen: Arc<Mutex<HashMap<String, Vec<Seen>>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let s = s.clone();
        async move {
            let received_us = now_us();
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                let e = &v["event"];
                if e["state"] == "ringing"
                    && let (Some(id), Some(at)) =
                        (e["call_id"].as_str(), e["started_at_ms"].as_u64())
                {
                    s.lock()
                        .unwrap()
                        .entry(id.to_owned())
                        .or_default()
                        .push(Seen {
                            started_at_ms: at,
                            received_us,
                        });
                }
            }
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct HostRound {
    rate: u32,
    placed: usize,
    successful: u64,
    failed: u64,
    achieved_cps: f64,
    reported: usize,
    lost: usize,
    duplicates: usize,
    event: (f64, f64, f64),
    webhook: (f64, f64, f64),
    /// CPU seconds used by Kamailio and by the host during the round.
    cpu: (f64, f64),
}

async fn host_round(
    pbx: &Pbx,
    host_data: &Path,
    users: &[String],
    seen: &Arc<Mutex<HashMap<String, Vec<Seen>>>>,
    rate: u32,
    seconds: u32,
    tag: &str,
) -> HostRound {
    let cpu_before = (pbx.cpu_seconds(), host_cpu_seconds(host_data));
    let round = tokio::task::block_in_place(|| place_calls(pbx, users, rate, seconds, tag));
    let ids: Vec<String> = round.sent.keys().map(|c| format!("sip-{c}")).collect();
    // Wait for stragglers: until every call is reported or nothing new
    // arrives for 5 s.
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = {
            let s = seen.lock().unwrap();
            ids.iter().filter(|id| s.contains_key(*id)).count()
        };
        if n == ids.len() || since.elapsed() > Duration::from_secs(5) {
            break;
        }
        if n != last {
            (last, since) = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = (
        pbx.cpu_seconds() - cpu_before.0,
        host_cpu_seconds(host_data) - cpu_before.1,
    );
    let s = seen.lock().unwrap();
    let (mut event, mut webhook) = (Vec::new(), Vec::new());
    let (mut reported, mut duplicates) = (0, 0);
    for (call_id, sent_us) in &round.sent {
        if let Some(evs) = s.get(&format!("sip-{call_id}")) {
            reported += 1;
            duplicates += evs.len() - 1;
            event.push(evs[0].started_at_ms as f64 - *sent_us as f64 / 1000.0);
            webhook.push((evs[0].received_us as f64 - *sent_us as f64) / 1000.0);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    HostRound {
        rate,
        placed: round.sent.len(),
        successful: round.successful,
        failed: round.failed,
        achieved_cps: round.achieved_cps,
        reported,
        // a call the phone answered must have been reported ringing
        lost: (round.successful as usize).saturating_sub(reported),
        duplicates,
        event: stats(&mut event),
        webhook: stats(&mut webhook),
        cpu,
    }
}

fn print_round(r: &HostRound) {
    println!(
        "| {} | {:.0} | {} | {} / {} | {} | {} | {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} |",
        r.rate,
        r.achieved_cps,
        r.placed,
        r.successful,
        r.failed,
        r.reported,
        r.lost,
        r.duplicates,
        r.event.0,
        r.event.1,
        r.event.2,
        r.webhook.0,
        r.webhook.1,
        r.webhook.2,
        r.cpu.0,
        r.cpu.1
    );
}

fn settle(what: &str, seconds: u64) {
    // Kamailio keeps finished dialogs in each full-state document for about
    // 15 s: let them expire so every round starts alike.
    eprintln!("({what}: waiting {seconds} s for the PBX's publications to expire)");
    std::thread::sleep(Duration::from_secs(seconds));
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let numbers: usize = env_or("SIP_LOAD_NUMBERS", 100);
    let rate: u32 = env_or("SIP_LOAD_RATE", 200);
    let seconds: u32 = env_or("SIP_LOAD_SECONDS", 15);
    let rounds: u32 = env_or("SIP_LOAD_ROUNDS", 3);
    let ramp = env_list("SIP_LOAD_RAMP", "300,400");
    let baseline_rates = env_list("SIP_LOAD_BASELINE_RATES", "200,300,400,500,600,800");
    let users: Vec<String> = (0..numbers).map(|i| format!("4144600{i:04}")).collect();
    assert!(
        Path::new(&repo_root().join("target/release/leansync")).is_file(),
        "build the host first: cargo build --release -p leansync-host"
    );

    println!(
        "SIP load: {numbers} numbers, calls of 100 ms talk round-robin over them, {seconds} s per round"
    );
    println!();
    println!("Kamailio alone (same config, dialog-info published, nobody subscribed):");
    println!();
    println!("| requested calls/s | achieved | successful | failed |");
    println!("|---|---|---|---|");
    let mut kamailio_max = 0.0f64;
    {
        let pbx = Pbx::start(&users);
        for (i, r) in baseline_rates.iter().enumerate() {
            if i > 0 {
                settle("baseline", 16);
            }
            let round = place_calls(&pbx, &users, *r, seconds, &format!("base-{r}"));
            println!(
                "| {r} | {:.0} | {} | {} |",
                round.achieved_cps, round.successful, round.failed
            );
            // clean: at most 0.1 % failed calls, and the rate was kept
            let clean = round.failed * 1000 <= u64::from(*r * seconds)
                && round.achieved_cps >= 0.95 * f64::from(*r);
            if clean {
                kamailio_max = kamailio_max.max(round.achieved_cps);
            }
            if round.failed * 100 > u64::from(*r * seconds) {
                break; // over 1 % failed: past the knee, higher rates only take longer
            }
        }
    }
    println!();
    println!("Kamailio's maximum clean rate: {kamailio_max:.0} calls/s");
    println!();

    let pbx = Pbx::start(&users);
    let server = pbx.addr();
    let h = Host::start_with(
        "",
        &[
            ("LEANSYNC_TELEPHONY_PROVIDER", "sip"),
            ("LEANSYNC_SIP_SERVER", &server),
            ("LEANSYNC_SIP_USERNAME", "leansync"),
            ("LEANSYNC_SIP_PASSWORD", "monpw"),
            ("LEANSYNC_LOG", "warn"),
        ],
    )
    .await;
    let (url, seen) = receiver().await;
    let e164: Vec<String> = users.iter().map(|u| format!("+{u}")).collect();
    let refs: Vec<&str> = e164.iter().map(String::as_str).collect();
    let started = Instant::now();
    Tenant::create_licensed(&h, "Load AG", &refs, &format!("{url}/load"), numbers).await;
    loop {
        let s = h.op("GET", "/api/v1/telephony", None).await;
        if s["active"].as_u64() == Some(numbers as u64) {
            println!(
                "{numbers} numbers licensed through the API and subscribed in {:.0} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all subscribed: {s}\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!();
    println!("With the host watching every number (latencies in ms: p50 / p99 / max):");
    println!();
    println!(
        "| calls/s | achieved | INVITEs | SIPp ok / failed | ringing reported | lost | duplicates | INVITE → event | INVITE → webhook | CPU s Kamailio / host |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut results = Vec::new();
    for i in 0..rounds {
        if i > 0 {
            tokio::task::block_in_place(|| settle("host", 16));
        }
        let r = host_round(
            &pbx,
            &h.data,
            &users,
            &seen,
            rate,
            seconds,
            &format!("host-{i}"),
        )
        .await;
        print_round(&r);
        results.push(r);
    }
    for r in &ramp {
        tokio::task::block_in_place(|| settle("host", 16));
        let round = host_round(
            &pbx,
            &h.data,
            &users,
            &seen,
            *r,
            seconds,
            &format!("ramp-{r}"),
        )
        .await;
        print_round(&round);
    }
    let mut p99: Vec<f64> = results.iter().map(|r| r.event.1).collect();
    p99.sort_by(|a, b| a.total_cmp(b));
    let lost: usize = results.iter().map(|r| r.lost).sum();
    println!();
    println!(
        "At {rate} calls/s over {rounds} rounds: lost ringing events {lost}; median of the rounds' p99 INVITE → event {:.1} ms (range {:.1}–{:.1}); Kamailio alone peaks at {kamailio_max:.0} calls/s ({:.2}× the {rate} calls/s target)",
        percentile(&p99, 0.5),
        p99.first().copied().unwrap_or(f64::NAN),
        p99.last().copied().unwrap_or(f64::NAN),
        kamailio_max / f64::from(rate)
    );
    let dropped = h.log().matches("call event dropped").count();
    if dropped > 0 {
        println!("host log: {dropped} call events dropped (pipeline queue full)");
    }
}
