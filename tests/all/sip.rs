//! The `sip` provider over real SIP on 127.0.0.1: Kamailio as the PBX
//! (tests/sip/bench.sh), SIPp as the phone and the external caller. A call
//! to a licensed number reaches the webhook connector and the SSE stream
//! with the right caller; answered calls end with a plausible duration;
//! unanswered ones are missed; anonymous and national callers are
//! normalised; an unlicensed number reaches nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leansync_tests::host::{Host, Tenant, eventually, free_port, webhook};
use leansync_tests::plugins::repo_root;
use leansync_tests::receiver::Receiver;
use serde_json::Value;

struct Pbx {
    dir: tempfile::TempDir,
    port: u16,
}

impl Pbx {
    fn start(users: &str) -> Pbx {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo_root().join("tests/sip/bench.sh"))
            .arg("start")
            .arg(dir.path().join("pbx"))
            .env("USERS", users)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bench.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let port = stdout
            .lines()
            .find_map(|l| l.strip_prefix("PORT="))
            .expect("PORT=")
            .trim()
            .parse()
            .unwrap();
        Pbx { dir, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/sip/bench.sh"))
            .arg("stop")
            .arg(self.dir.path().join("pbx"))
            .status();
    }
}

/// A host on the `sip` provider, watching through `pbx` as `leansync` with
/// `password`, plus `extra` environment.
async fn sip_host(pbx: &Pbx, password: &str, extra: &[(&str, &str)]) -> Host {
    let server = pbx.addr();
    let mut env = vec![
        ("LEANSYNC_TELEPHONY_PROVIDER", "sip"),
        ("LEANSYNC_SIP_SERVER", server.as_str()),
        ("LEANSYNC_SIP_USERNAME", "leansync"),
        ("LEANSYNC_SIP_PASSWORD", password),
    ];
    env.extend_from_slice(extra);
    Host::start_with("", &env).await
}

fn scenario(name: &str) -> PathBuf {
    repo_root().join("tests/sip/scenarios").join(name)
}

/// Runs sipp (wrapped in `timeout`, as a stuck call can keep it alive).
fn sipp(pbx: &Pbx, args: &[&str]) -> Child {
    Command::new("timeout")
        .arg("30")
        .arg("sipp")
        .args(args)
        .args(["-i", "127.0.0.1", "-m", "1", "-nostdin", &pbx.addr()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `scenario` as SIP user `user` on local `port` (see [`sipp`]).
fn play(pbx: &Pbx, scenario_name: &str, user: &str, port: &str, args: &[&str]) -> Child {
    let file = scenario(scenario_name);
    let mut all = vec!["-sf", file.to_str().unwrap(), "-s", user, "-p", port];
    all.extend_from_slice(args);
    sipp(pbx, &all)
}

fn register(pbx: &Pbx, user: &str, port: u16) {
    let status = Command::new("timeout")
        .arg("10")
        .arg("sipp")
        .arg("-sf")
        .arg(scenario("register.xml"))
        .args([
            "-s",
            user,
            "-au",
            user,
            "-ap",
            "pw",
            "-p",
            &port.to_string(),
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-nostdin",
            &pbx.addr(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "phone {user} could not register");
}

fn events_of(r: &Receiver) -> Vec<Value> {
    r.received()
        .iter()
        .filter_map(|x| serde_json::from_slice::<Value>(&x.body).ok())
        .map(|v| v["event"].clone())
        .collect()
}

async fn call_states(r: &Receiver, caller: Option<&str>, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(15), || {
        let evs: Vec<Value> = events_of(r)
            .into_iter()
            .filter(|e| e["caller"].as_str() == caller)
            .collect();
        (evs.len() >= n).then_some(evs)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {n} events from {caller:?}: {:?}", events_of(r)))
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_on_a_real_pbx_reach_the_licensed_app_only() {
    let pbx = Pbx::start("41441234567:pw 41441234568:pw leansync:monpw");
    let (phone, other_phone) = (free_port(), free_port());
    register(&pbx, "41441234567", phone);
    register(&pbx, "41441234568", other_phone);
    let h = sip_host(&pbx, "monpw", &[]).await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "SIP AG",
        &["044 123 45 67", "044 123 45 68"],
        &format!("{}/sip", r.url()),
    )
    .await;
    assert_eq!(t.number, "+41441234567");
    // The licensed number is subscribed (digest-authenticated) within seconds.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = h.op("GET", "/api/v1/telephony", None).await;
        if status["active"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status["active"],
        1,
        "subscription not active: {status}\n{}",
        h.log()
    );
    assert_eq!(
        status["monitored"], 1,
        "only the licensed number is monitored: {status}"
    );
    let mut sse = h.sse(&t.key).await;

    // Answered: ringing with the E.164 caller, answered, ended with ~2 s.
    let port = phone.to_string();
    let mut answer = play(&pbx, "uas_answer.xml", "41441234567", &port, &["-d", "500"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut caller = sipp(
        &pbx,
        &[
            "-sf",
            scenario("uac_call.xml").to_str().unwrap(),
            "-s",
            "41441234567",
            "-set",
            "caller",
            "+41791234567",
            "-p",
            &free_port().to_string(),
            "-d",
            "2000",
        ],
    );
    let ringing = sse
        .next(Duration::from_secs(10))
        .await
        .expect("ringing on the SSE stream");
    assert_eq!(
        (ringing["state"].as_str(), ringing["caller"].as_str()),
        (Some("ringing"), Some("+41791234567")),
        "{ringing}"
    );
    let evs = call_states(&r, Some("+41791234567"), 3).await;
    let states: Vec<&str> = evs.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["ringing", "answered", "ended"]);
    assert!(
        evs.iter()
            .all(|e| e["call_id"] == evs[0]["call_id"] && e["licensed_number"] == "+41441234567")
    );
    let duration = evs[2]["duration_secs"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&duration),
        "duration {duration} s for a 2 s call"
    );
    assert!(answer.wait().unwrap().success() && caller.wait().unwrap().success());

    // Unanswered and anonymous: ringing then missed, caller withheld.
    let mut phone_rings = play(&pbx, "uas_noanswer.xml", "41441234567", &port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gives_up = sipp(
        &pbx,
        &[
            "-sf",
            scenario("uac_cancel.xml").to_str().unwrap(),
            "-s",
            "41441234567",
            "-set",
            "caller",
            "anonymous",
            "-set",
            "caller_domain",
            "anonymous.invalid",
            "-p",
            &free_port().to_string(),
            "-d",
            "1000",
        ],
    );
    let evs = call_states(&r, None, 2).await;
    let states: Vec<&str> = evs.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["ringing", "missed"]);
    let _ = gives_up.wait();
    let _ = phone_rings.wait();

    // A caller in national format arrives in E.164.
    let mut answer = play(&pbx, "uas_answer.xml", "41441234567", &port, &["-d", "200"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut caller = sipp(
        &pbx,
        &[
            "-sf",
            scenario("uac_call.xml").to_str().unwrap(),
            "-s",
            "41441234567",
            "-set",
            "caller",
            "0797654321",
            "-p",
            &free_port().to_string(),
            "-d",
            "500",
        ],
    );
    call_states(&r, Some("+41797654321"), 3).await;
    let _ = (answer.wait(), caller.wait());

    // The customer's second number has no license: nothing reaches the app.
    let before = r.received().len();
    let other = other_phone.to_string();
    let mut answer = play(
        &pbx,
        "uas_answer.xml",
        "41441234568",
        &other,
        &["-d", "200"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut caller = sipp(
        &pbx,
        &[
            "-sf",
            scenario("uac_call.xml").to_str().unwrap(),
            "-s",
            "41441234568",
            "-set",
            "caller",
            "+41791111111",
            "-p",
            &free_port().to_string(),
            "-d",
            "500",
        ],
    );
    assert!(
        answer.wait().unwrap().success() && caller.wait().unwrap().success(),
        "the unlicensed call itself must work on the PBX"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        r.received().len(),
        before,
        "an unlicensed number reached the app"
    );

    // Revoking the key drops the number from monitoring (unsubscribe).
    h.ok(
        &t.admin,
        "DELETE",
        &format!("/api/v1/keys/{}", t.key_id),
        None,
    )
    .await;
    let mut status = Value::Null;
    for _ in 0..50 {
        status = h.op("GET", "/api/v1/telephony", None).await;
        if status["monitored"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["monitored"], 0, "{status}");
}

impl Pbx {
    /// Dialogs the PBX still tracks (Kamailio's dialog module).
    fn dialogs(&self) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.dir.path().join("pbx/kamailio_ctl").display()
            ))
            .arg("dlg.list")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kamcmd dlg.list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Events of one call id, waiting until `n` have arrived.
async fn events_of_call(h: &Host, r: &Receiver, call_id: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), || {
        let evs: Vec<Value> = events_of(r)
            .into_iter()
            .filter(|e| e["call_id"] == call_id)
            .collect();
        (evs.len() >= n).then_some(evs)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "fewer than {n} events of {call_id}: {:?}\n{}",
            events_of(r),
            h.log()
        )
    })
}

fn states(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["state"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn click_to_call_rings_the_phone_then_the_destination_over_a_real_pbx() {
    let pbx = Pbx::start("41441234567:pw 41449876543:pw leansync:monpw");
    let (phone, dest) = (free_port(), free_port());
    register(&pbx, "41441234567", phone);
    register(&pbx, "41449876543", dest);
    let h = sip_host(
        &pbx,
        "monpw",
        &[
            ("LEANSYNC_SIP_RING_TIMEOUT_SECS", "3"),
            ("LEANSYNC_SIP_ANSWER_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "C2C AG",
        &["044 123 45 67"],
        &format!("{}/c2c", r.url()),
    )
    .await;
    let (phone, dest) = (phone.to_string(), dest.to_string());
    let place = |to: &'static str| {
        let h = &h;
        let key = t.key.clone();
        async move {
            h.call(
                "POST",
                "/api/v1/calls",
                Some(&key),
                Some(serde_json::json!({ "to": to })),
            )
            .await
        }
    };

    // Both answer: the phone is rung first (no SDP), its offer goes to the
    // destination, both ACKed (c2c_phone.xml fails on an ACK without SDP);
    // the destination hangs up after 1.5 s and the phone gets the BYE.
    let mut phone_leg = play(&pbx, "c2c_phone.xml", "41441234567", &phone, &["-d", "200"]);
    let mut dest_leg = play(&pbx, "c2c_dest.xml", "41449876543", &dest, &["-d", "1500"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = place("044 987 65 43").await;
    assert_eq!(status, 202, "{body}");
    let id = body["call_id"].as_str().expect("call id").to_owned();
    let evs = events_of_call(&h, &r, &id, 3).await;
    assert_eq!(
        states(&evs),
        ["ringing", "answered", "ended"],
        "{evs:?}\n{}",
        h.log()
    );
    assert!(evs.iter().all(|e| e["direction"] == "outbound"
        && e["caller"] == "+41441234567"
        && e["callee"] == "+41449876543"));
    let talk = evs[2]["duration_secs"].as_u64().unwrap();
    assert!((1..=3).contains(&talk), "talk time {talk} s for 1.5 s");
    assert!(
        phone_leg.wait().unwrap().success(),
        "phone leg scenario failed"
    );
    assert!(
        dest_leg.wait().unwrap().success(),
        "destination leg scenario failed"
    );
    let (_, state) = h
        .call("GET", &format!("/api/v1/calls/{id}"), Some(&t.key), None)
        .await;
    assert_eq!(state["state"], "ended", "{state}");

    // Destination busy: reported as missed; the answered phone leg is
    // acknowledged and hung up (its scenario only passes on ACK + BYE).
    let mut phone_leg = play(&pbx, "c2c_phone.xml", "41441234567", &phone, &["-d", "200"]);
    let mut dest_leg = play(&pbx, "c2c_dest_busy.xml", "41449876543", &dest, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = place("044 987 65 43").await;
    assert_eq!(status, 202, "{body}");
    let id = body["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        states(&events_of_call(&h, &r, &id, 2).await),
        ["ringing", "missed"]
    );
    assert!(
        phone_leg.wait().unwrap().success(),
        "busy: phone leg not closed cleanly"
    );
    assert!(dest_leg.wait().unwrap().success(), "busy: destination leg");

    // The phone never answers: cancelled after the ring timeout, missed.
    let mut phone_leg = play(&pbx, "uas_noanswer.xml", "41441234567", &phone, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = place("044 987 65 43").await;
    assert_eq!(status, 202, "{body}");
    let id = body["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        states(&events_of_call(&h, &r, &id, 2).await),
        ["ringing", "missed"]
    );
    assert!(
        phone_leg.wait().unwrap().success(),
        "no answer: the phone got no CANCEL"
    );

    // Nothing is left on the PBX, and the failure is visible to the operator.
    let left = eventually(Duration::from_secs(5), || {
        let d = pbx.dialogs();
        (!d.contains("h_entry")).then_some(d)
    })
    .await;
    assert!(left.is_some(), "dialogs left on the PBX: {}", pbx.dialogs());
    let status = h.op("GET", "/api/v1/telephony", None).await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("did not answer"),
        "{status}"
    );

    // A premium-rate destination is refused before anything is dialled.
    let before = r.received().len();
    let (status, body) = place("0901 234 567").await;
    assert!(status == 403 || status == 422, "{status} {body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.received().len(), before, "a refused call produced events");
}

impl Pbx {
    fn bench(&self, command: &str) {
        let out = Command::new(repo_root().join("tests/sip/bench.sh"))
            .arg(command)
            .arg(self.dir.path().join("pbx"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bench.sh {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops Kamailio (registrations and subscriptions are lost with it).
    fn stop(&self) {
        self.bench("stop");
    }

    /// Starts Kamailio again on the same port with the same users.
    fn restart(&self) {
        self.bench("restart");
    }

    /// SUBSCRIBEs the running Kamailio instance has received.
    fn subscribes_received(&self) -> u64 {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.dir.path().join("pbx/kamailio_ctl").display()
            ))
            .args(["stats.get_statistics", "core:"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("core:rcv_requests_subscribe = "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no SUBSCRIBE count in {text:?}"))
    }
}

/// Polls `GET /api/v1/telephony` until `ok` holds.
async fn telephony_until(h: &Host, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    get_until(h, &h.token, "/api/v1/telephony", what, ok).await
}

/// Polls `GET path` as `token` until `ok` holds (10 s at most).
async fn get_until(
    h: &Host,
    token: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let mut status = Value::Null;
    for _ in 0..100 {
        status = h.ok(token, "GET", path, None).await;
        if ok(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never {what}: {status}\n{}", h.log());
}

/// One answered call from `caller` to the phone of `user` on `port`.
async fn answered_call(pbx: &Pbx, user: &str, port: u16, caller: &str) -> (Child, Child) {
    let answer = sipp(
        pbx,
        &[
            "-sf",
            scenario("uas_answer.xml").to_str().unwrap(),
            "-s",
            user,
            "-p",
            &port.to_string(),
            "-d",
            "200",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call = sipp(
        pbx,
        &[
            "-sf",
            scenario("uac_call.xml").to_str().unwrap(),
            "-s",
            user,
            "-set",
            "caller",
            caller,
            "-p",
            &free_port().to_string(),
            "-d",
            "500",
        ],
    );
    (answer, call)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_pbx_gets_every_number_subscribed_again() {
    let pbx = Pbx::start("41441234567:pw leansync:monpw");
    let phone = free_port();
    register(&pbx, "41441234567", phone);
    let h = sip_host(&pbx, "monpw", &[("LEANSYNC_SIP_KEEPALIVE_SECS", "1")]).await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "Restart AG",
        &["044 123 45 67"],
        &format!("{}/sip", r.url()),
    )
    .await;
    telephony_until(&h, "subscribed", |s| s["active"] == 1).await;
    let mut sse = h.sse(&t.key).await;

    // Down for longer than a keepalive: shown as such, then recovered
    // within seconds of the PBX coming back (not at the 480 s refresh).
    pbx.stop();
    let down = telephony_until(&h, "disconnected", |s| s["connected"] == false).await;
    assert_eq!(down["active"], 0, "{down}");
    let why = down["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&pbx.addr()) && why.contains("does not answer"),
        "{down}"
    );
    pbx.restart();
    register(&pbx, "41441234567", phone);
    let up = telephony_until(&h, "subscribed again", |s| {
        s["active"] == 1 && s["connected"] == true
    })
    .await;
    assert_eq!(up["last_error"], Value::Null, "{up}");
    let (mut answer, mut call) = answered_call(&pbx, "41441234567", phone, "+41791234567").await;
    let ringing = sse
        .next(Duration::from_secs(10))
        .await
        .expect("a call after the PBX came back is reported");
    assert_eq!(ringing["caller"], "+41791234567", "{ringing}");
    call_states(&r, Some("+41791234567"), 3).await;
    assert!(answer.wait().unwrap().success() && call.wait().unwrap().success());

    // Restarted between two keepalives: nothing looked down, but the
    // keepalive's refresh meets a 481 and the number is subscribed anew
    // (the fresh instance sees the 481'd refresh, then SUBSCRIBE + auth).
    pbx.restart();
    register(&pbx, "41441234567", phone);
    let renewed = eventually(Duration::from_secs(10), || {
        (pbx.subscribes_received() >= 3).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "no new subscription after a quick PBX restart ({} SUBSCRIBEs)\n{}",
        pbx.subscribes_received(),
        h.log()
    );
    telephony_until(&h, "subscribed after the quick restart", |s| {
        s["active"] == 1 && s["connected"] == true
    })
    .await;
    let (mut answer, mut call) = answered_call(&pbx, "41441234567", phone, "+41797777777").await;
    let evs = call_states(&r, Some("+41797777777"), 3).await;
    assert_eq!(states(&evs), ["ringing", "answered", "ended"]);
    assert!(answer.wait().unwrap().success() && call.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_reported_without_flooding_the_pbx() {
    let pbx = Pbx::start("41441234567:pw 41441234568:pw leansync:monpw");
    let h = sip_host(
        &pbx,
        "not-the-password",
        &[("LEANSYNC_SIP_KEEPALIVE_SECS", "1")],
    )
    .await;
    let r = Receiver::start().await;
    // Two customers, one licensed number each: two monitored numbers.
    let t = Tenant::create(
        &h,
        "Wrong AG",
        &["044 123 45 67"],
        &format!("{}/a", r.url()),
    )
    .await;
    Tenant::create(
        &h,
        "Other AG",
        &["044 123 45 68"],
        &format!("{}/b", r.url()),
    )
    .await;
    let status = telephony_until(&h, "reporting the refused credentials", |s| {
        s["monitored"] == 2
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused the credentials"))
    })
    .await;
    let error = status["last_error"].as_str().unwrap();
    for part in [
        "'leansync'",
        pbx.addr().as_str(),
        "telephony.sip.username",
        "telephony.sip.password",
        "LEANSYNC_SIP_PASSWORD",
        "next attempt in",
    ] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
    assert_eq!(
        (status["connected"].as_bool(), status["active"].as_u64()),
        (Some(false), Some(0)),
        "{status}"
    );

    // Backoff for the whole account: after the refusal, neither number
    // tries again for a while (each try is two SUBSCRIBEs: challenge and
    // answer), however many numbers are monitored.
    let after_refusal = pbx.subscribes_received();
    assert!(
        after_refusal <= 4,
        "{after_refusal} SUBSCRIBEs for 2 numbers before holding back"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pbx.subscribes_received(),
        after_refusal,
        "the host kept trying refused credentials\n{}",
        h.log()
    );

    // Nothing else is affected: the host is alive and says why it is not
    // ready, and calls from another source still reach the connector.
    let (status, _) = h.call_text("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, why) = h.call_text("GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("refused the credentials"), "{why}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stored = h
        .op(
            "POST",
            "/api/v1/ingest",
            Some(serde_json::json!({
                "call_id": "replay-1", "direction": "inbound", "state": "ringing",
                "caller": "+41791234567", "callee": t.number, "monitored": t.number,
                "started_at_ms": now, "answered_at_ms": null, "ended_at_ms": null,
                "duration_secs": null
            })),
        )
        .await;
    assert!(stored["seq"].is_u64(), "{stored}");
    call_states(&r, Some("+41791234567"), 1).await;
}

/// The body that connects a customer's own PBX: `pbx` as `user`, `password`
/// as the account's secret.
fn sip_account(pbx: &Pbx, user: &str, password: &str) -> Value {
    serde_json::json!({
        "provider": "sip",
        "settings": { "server": pbx.addr(), "username": user, "keepalive_secs": 1 },
        "secret": password,
    })
}

/// Customer `name` AG with its own `sip` telephony account, logging in to
/// `pbx` as user `name` in lower case with `password`; `number` licensed to
/// a webhook at `r`'s `/name`.
async fn sip_tenant(
    h: &Host,
    pbx: &Pbx,
    r: &Receiver,
    name: &str,
    number: &str,
    password: &str,
) -> Tenant {
    let user = name.to_lowercase();
    Tenant::create_on(
        h,
        &format!("{name} AG"),
        &[number],
        sip_account(pbx, &user, password),
        webhook(&format!("{}/{user}", r.url())),
        1,
    )
    .await
}

/// Polls the connection of `t`'s telephony account, as its own admin.
async fn connection_until(h: &Host, t: &Tenant, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/telephony-accounts/{}", t.telephony);
    get_until(h, &t.admin, &path, what, |a| ok(&a["connection"]))
        .await
        .get("connection")
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_customer_watches_through_its_own_sip_account_and_sees_only_its_own_errors() {
    let pbx = Pbx::start("41441234567:pw 41441234568:pw good:goodpw-123 bad:badpw-123");
    let phone = free_port();
    register(&pbx, "41441234567", phone);
    register(&pbx, "41441234568", free_port());
    // The host's own provider stays the default simulator.
    let mut h = Host::start("").await;
    let r = Receiver::start().await;
    let good = sip_tenant(&h, &pbx, &r, "Good", "044 123 45 67", "goodpw-123").await;
    let bad = sip_tenant(&h, &pbx, &r, "Bad", "044 123 45 68", "not-the-password").await;

    // The right password: subscribed through the customer's own account.
    let ok = connection_until(&h, &good, "subscribed", |c| c["active"] == 1).await;
    assert_eq!(
        (
            &ok["kind"],
            &ok["connected"],
            &ok["monitored"],
            &ok["last_error"]
        ),
        (
            &Value::from("sip"),
            &Value::from(true),
            &Value::from(1),
            &Value::Null
        ),
        "{ok}"
    );
    // The wrong one: a clear error on that account only.
    let refused = connection_until(&h, &bad, "reporting the refused credentials", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused the credentials"))
    })
    .await;
    let error = refused["last_error"].as_str().unwrap();
    for part in [
        "'bad'",
        pbx.addr().as_str(),
        bad.telephony.as_str(),
        "password",
    ] {
        assert!(error.contains(part), "'{part}' missing from: {error}");
    }
    assert!(
        !error.contains("LEANSYNC_SIP"),
        "a customer cannot set host variables: {error}"
    );
    assert_eq!(
        (&refused["connected"], &refused["active"]),
        (&Value::from(false), &Value::from(0)),
        "{refused}"
    );

    // Nothing else is affected: the host is ready on its own provider, and
    // the operator sees both accounts.
    let (status, why) = h.call_text("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{why}");
    let all = h.op("GET", "/api/v1/telephony", None).await;
    assert_eq!(
        (&all["kind"], &all["connected"]),
        (&Value::from("sim"), &Value::from(true)),
        "{all}"
    );
    assert_eq!(all["accounts"][&good.telephony]["active"], 1, "{all}");
    assert!(
        all["accounts"][&bad.telephony]["last_error"].is_string(),
        "{all}"
    );
    // One customer's admin sees nothing of the other's account.
    let (status, _) = h
        .call(
            "GET",
            &format!("/api/v1/telephony-accounts/{}", bad.telephony),
            Some(&good.admin),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A call to the good customer's number reaches its app, only its app.
    let (mut answer, mut call) = answered_call(&pbx, "41441234567", phone, "+41791234567").await;
    let evs = call_states(&r, Some("+41791234567"), 3).await;
    assert_eq!(states(&evs), ["ringing", "answered", "ended"]);
    assert!(
        evs.iter().all(|e| e["licensed_number"] == "+41441234567"),
        "{evs:?}"
    );
    assert!(r.received().iter().all(|x| x.uri.path() == "/good"));
    assert!(answer.wait().unwrap().success() && call.wait().unwrap().success());

    // The customer corrects the password: its account reconnects with it.
    let path = format!("/api/v1/telephony-accounts/{}", bad.telephony);
    let changed = h
        .ok(
            &bad.admin,
            "PUT",
            &path,
            Some(serde_json::json!({ "secret": "badpw-123" })),
        )
        .await;
    assert_eq!(changed["settings"]["username"], "bad", "{changed}");
    let fixed = connection_until(&h, &bad, "subscribed with the new password", |c| {
        c["active"] == 1
    })
    .await;
    assert_eq!(fixed["last_error"], Value::Null, "{fixed}");

    // The passwords appear in no answer of the API.
    let mut answers = vec![all.to_string()];
    for t in [&good, &bad] {
        for path in [
            format!("/api/v1/telephony-accounts/{}", t.telephony),
            format!("/api/v1/customers/{}/telephony-accounts", t.customer),
            format!("/api/v1/customers/{}/audit", t.customer),
        ] {
            answers.push(h.ok(&t.admin, "GET", &path, None).await.to_string());
        }
    }
    answers.push(h.op("GET", "/api/v1/audit", None).await.to_string());
    for text in &answers {
        for secret in ["goodpw-123", "not-the-password", "badpw-123"] {
            assert!(!text.contains(secret), "{secret} revealed: {text}");
        }
    }

    // Bad settings are refused with 422 naming the key; nothing changes.
    let (status, body) = h
        .call(
            "POST",
            &format!("/api/v1/customers/{}/telephony-accounts", good.customer),
            Some(&good.admin),
            Some(serde_json::json!({
                "provider": "sip",
                "settings": { "server": pbx.addr(), "registrar": "x" },
                "secret": "pw",
            })),
        )
        .await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 422
            && message.contains(
                "settings.registrar: unknown field `registrar`, expected one of `server`"
            ),
        "{status} {body}"
    );
    let (status, body) = h
        .call(
            "PUT",
            &path,
            Some(&bad.admin),
            Some(serde_json::json!({ "settings": { "server": "nowhere" } })),
        )
        .await;
    assert!(
        status == 422 && body.to_string().contains("settings.server: 'nowhere'"),
        "{status} {body}"
    );
    let listed = h
        .ok(
            &good.admin,
            "GET",
            &format!("/api/v1/customers/{}/telephony-accounts", good.customer),
            None,
        )
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // After a restart the accounts connect again by themselves.
    h.kill9();
    h.spawn().await;
    for t in [&good, &bad] {
        connection_until(&h, t, "subscribed after a restart", |c| c["active"] == 1).await;
    }

    // Revoked consent: the account's number is no longer watched, at once.
    h.ok(
        &good.admin,
        "DELETE",
        &format!("/api/v1/telephony-accounts/{}/consent", good.telephony),
        None,
    )
    .await;
    connection_until(&h, &good, "unsubscribed", |c| c["monitored"] == 0).await;
}
