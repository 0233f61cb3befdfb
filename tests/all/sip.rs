//! The `sip` provider over real SIP on 127.0.0.1: Kamailio as the PBX
//! (tests/sip/bench.sh), SIPp as the phone and the external caller. A call
//! to a licensed number reaches the webhook connector and the SSE stream
//! with the right caller; answered calls end with a plausible duration;
//! unanswered ones are missed; anonymous and national callers are
//! normalised; an unlicensed number reaches nothing. The host registers
//! its watcher account (and unregisters on SIGTERM), works the same over
//! TCP, and click-to-call rings a real baresip phone before the destination.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leansync_tests::host::{Host, Sse, Tenant, eventually, free_port, webhook};
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

/// A PBX with the phone of 41441234567 registered (SIPp, on `phone`), a
/// host watching through it with `env`, and a customer licensing that
/// number whose events reach `r` and `sse`, once the number is subscribed.
struct Watched {
    pbx: Pbx,
    phone: u16,
    h: Host,
    r: Receiver,
    sse: Sse,
}

impl Watched {
    async fn start(env: &[(&str, &str)]) -> Watched {
        let pbx = Pbx::start("41441234567:pw leansync:monpw");
        let phone = free_port();
        register(&pbx, "41441234567", phone);
        let h = sip_host(&pbx, "monpw", env).await;
        let r = Receiver::start().await;
        let t = Tenant::create(
            &h,
            "Watched AG",
            &["044 123 45 67"],
            &format!("{}/watched", r.url()),
        )
        .await;
        telephony_until(&h, "subscribed", |s| s["active"] == 1).await;
        let sse = h.sse(&t.key).await;
        Watched {
            pbx,
            phone,
            h,
            r,
            sse,
        }
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

async fn call_states(r: &Receiver, caller: Option<&str>, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(15), || {
        let evs: Vec<Value> = r
            .events()
            .into_iter()
            .filter(|e| e["caller"].as_str() == caller)
            .collect();
        (evs.len() >= n).then_some(evs)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {n} events from {caller:?}: {:?}", r.events()))
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
    let status = telephony_until(&h, "subscribed", |s| s["active"] == 1).await;
    assert_eq!(
        status["monitored"], 1,
        "only the licensed number is monitored: {status}"
    );
    let mut sse = h.sse(&t.key).await;

    answered_and_missed_calls_are_reported(&pbx, phone, &r, &mut sse).await;

    // A caller in national format arrives in E.164.
    let (mut answer, mut caller) =
        answered_call(&pbx, "41441234567", phone, "0797654321", 500).await;
    call_states(&r, Some("+41797654321"), 3).await;
    let _ = (answer.wait(), caller.wait());

    // The customer's second number has no license: nothing reaches the app.
    let before = r.received().len();
    let (mut answer, mut caller) =
        answered_call(&pbx, "41441234568", other_phone, "+41791111111", 500).await;
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
    telephony_until(&h, "unmonitored after the revocation", |s| {
        s["monitored"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_account_registers_the_host_and_unregisters_on_shutdown() {
    let pbx = Pbx::start("leansync:monpw");
    let sip_port = free_port();
    let bind = format!("127.0.0.1:{sip_port}");
    let mut h = sip_host(&pbx, "monpw", &[("LEANSYNC_SIP_BIND", bind.as_str())]).await;
    // Digest-authenticated REGISTER (Kamailio challenges every one): the
    // PBX's location table points at the host's SIP socket.
    let contact = format!("sip:leansync@{bind}");
    let registered = eventually(Duration::from_secs(10), || {
        let bindings = pbx.contacts("leansync");
        bindings
            .iter()
            .any(|b| b.address == contact)
            .then_some(bindings)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{contact} not registered: {:?}\n{}",
            pbx.contacts("leansync"),
            h.log()
        )
    });
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].socket, format!("udp:{}", pbx.addr()));
    let status = telephony_until(&h, "registered", |s| {
        s["registration"]["registered"] == true
    })
    .await;
    assert_eq!(
        status["registration"]["contact"],
        contact.as_str(),
        "{status}"
    );
    assert_eq!(status["registration"]["expires_secs"], 600, "{status}");
    assert_eq!(status["registration"]["error"], Value::Null, "{status}");

    // SIGTERM: the host removes its Contact before it exits.
    assert!(h.terminate(), "the host did not stop cleanly\n{}", h.log());
    assert!(
        pbx.contacts("leansync").is_empty(),
        "still registered after shutdown: {:?}\n{}",
        pbx.contacts("leansync"),
        h.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tcp_one_connection_carries_registration_subscriptions_and_calls() {
    let mut w = Watched::start(&[("LEANSYNC_SIP_TRANSPORT", "tcp")]).await;
    let (pbx, h) = (&w.pbx, &w.h);
    let status =
        telephony_until(h, "registered", |s| s["registration"]["registered"] == true).await;
    // Registered over the TCP connection, with a Contact that tells the
    // PBX to send its requests back over TCP.
    let contact = status["registration"]["contact"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        contact.to_ascii_lowercase().ends_with(";transport=tcp"),
        "{status}"
    );
    let registered = pbx.contacts("leansync");
    assert!(
        registered
            .iter()
            .any(|c| c.address == contact && c.socket == format!("tcp:{}", pbx.addr())),
        "{registered:?} vs {contact}"
    );
    // The host has no UDP socket over TCP: every NOTIFY below came over
    // the connection it opened.
    answered_and_missed_calls_are_reported(&w.pbx, w.phone, &w.r, &mut w.sse).await;
}

/// One binding in the PBX's location table.
#[derive(Debug)]
struct Binding {
    /// The registered Contact URI.
    address: String,
    /// Kamailio's socket it arrived on, `udp:127.0.0.1:<port>`.
    socket: String,
}

impl Pbx {
    /// Runs a kamcmd command on this PBX's control socket.
    fn kamcmd(&self, args: &[&str]) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.dir.path().join("pbx/kamailio_ctl").display()
            ))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kamcmd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Dialogs the PBX still tracks (Kamailio's dialog module).
    fn dialogs(&self) -> String {
        self.kamcmd(&["dlg.list"])
    }

    /// Fails unless every dialog on the PBX has ended within seconds.
    /// Ended dialogs (state 5, "deleted") may stay listed a little longer,
    /// until Kamailio drops its last reference (seen under load).
    async fn assert_no_dialogs_left(&self) {
        let open = |d: &str| {
            d.lines()
                .filter_map(|l| l.trim().strip_prefix("state: "))
                .any(|state| state.trim() != "5")
        };
        let left = eventually(Duration::from_secs(10), || {
            let d = self.dialogs();
            (!open(&d)).then_some(d)
        })
        .await;
        assert!(
            left.is_some(),
            "dialogs left on the PBX: {}",
            self.dialogs()
        );
    }

    /// Requests of `method` (lower case) the running instance received.
    fn received(&self, method: &str) -> u64 {
        let text = self.kamcmd(&["stats.get_statistics", "core:"]);
        let key = format!("core:rcv_requests_{method} = ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {method} count in {text:?}"))
    }

    /// The current registrations of SIP user `aor` (usrloc `ul.dump`).
    fn contacts(&self, aor: &str) -> Vec<Binding> {
        let mut out = Vec::new();
        let mut current = None;
        for line in self.kamcmd(&["ul.dump"]).lines().map(str::trim) {
            if let Some(a) = line.strip_prefix("AoR: ") {
                current = Some(a.to_owned());
            } else if current.as_deref() != Some(aor) {
                continue;
            } else if let Some(address) = line.strip_prefix("Address: ") {
                out.push(Binding {
                    address: address.to_owned(),
                    socket: String::new(),
                });
            } else if let Some(socket) = line.strip_prefix("Socket: ")
                && let Some(b) = out.last_mut()
            {
                b.socket = socket.to_owned();
            }
        }
        out
    }
}

/// Events of one call id, waiting until `n` have arrived.
async fn events_of_call(h: &Host, r: &Receiver, call_id: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), || {
        let evs: Vec<Value> = r
            .events()
            .into_iter()
            .filter(|e| e["call_id"] == call_id)
            .collect();
        (evs.len() >= n).then_some(evs)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "fewer than {n} events of {call_id}: {:?}\n{}",
            r.events(),
            h.log()
        )
    })
}

/// Places a click-to-call with `key` (number +41441234567) to
/// 044 987 65 43 and waits until it was ringing, answered and ended, all
/// outbound from that number to +41449876543; returns its id and events.
/// `phone_log` tells what the phone saw when it was not so.
async fn click_to_call_connects(
    h: &Host,
    r: &Receiver,
    key: &str,
    phone_log: &dyn Fn() -> String,
) -> (String, Vec<Value>) {
    let (status, body) = h
        .call(
            "POST",
            "/api/v1/calls",
            Some(key),
            Some(serde_json::json!({ "to": "044 987 65 43" })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["call_id"].as_str().expect("call id").to_owned();
    let evs = events_of_call(h, r, &id, 3).await;
    assert_eq!(
        states(&evs),
        ["ringing", "answered", "ended"],
        "{evs:?}\n{}\n{}",
        h.log(),
        phone_log()
    );
    assert!(evs.iter().all(|e| e["direction"] == "outbound"
        && e["caller"] == "+41441234567"
        && e["callee"] == "+41449876543"));
    (id, evs)
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
    let (id, evs) = click_to_call_connects(&h, &r, &t.key, &String::new).await;
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
    pbx.assert_no_dialogs_left().await;
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

/// A real softphone: baresip registered to a [`Pbx`] as one user,
/// answering every call at once (`answermode=auto`), without audio devices
/// (g711 only). Runs in its own process group, killed on drop.
struct Baresip {
    dir: tempfile::TempDir,
    child: Child,
}

impl Baresip {
    /// Starts baresip as `user` (password `pw`) and waits until the PBX
    /// has its registration.
    async fn start(pbx: &Pbx, user: &str) -> Baresip {
        let dir = tempfile::tempdir().unwrap();
        // Port 0: baresip also listens on TCP and TLS, at the port + 1 of a
        // fixed one, which may be another test's; with 0 each transport
        // gets its own free port from the system.
        let config = "poll_method epoll\n\
                      sip_listen 127.0.0.1:0\n\
                      net_interface 127.0.0.1\n\
                      module_path /usr/lib/baresip/modules\n\
                      module g711.so\n\
                      module_app account.so\n";
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!(
                "<sip:{user}@{}>;auth_pass=pw;answermode=auto;regint=600\n",
                pbx.addr()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let child = Command::new("timeout")
            .args(["120", "baresip", "-f"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start baresip: run scripts/test-deps.sh");
        let phone = Baresip { dir, child };
        let registered = eventually(Duration::from_secs(10), || {
            (!pbx.contacts(user).is_empty()).then_some(())
        })
        .await;
        assert!(
            registered.is_some(),
            "baresip did not register as {user}:\n{}",
            phone.log()
        );
        phone
    }

    /// Everything baresip printed.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn click_to_call_over_tcp_rings_a_real_softphone_then_the_destination() {
    let pbx = Pbx::start("41441234567:pw 41449876543:pw leansync:monpw");
    let phone = Baresip::start(&pbx, "41441234567").await;
    let dest = free_port();
    register(&pbx, "41449876543", dest);
    // Over TCP: both legs go through the host's one connection to the PBX
    // (the phones themselves are on UDP).
    let h = sip_host(&pbx, "monpw", &[("LEANSYNC_SIP_TRANSPORT", "tcp")]).await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "Softphone AG",
        &["044 123 45 67"],
        &format!("{}/c2c", r.url()),
    )
    .await;

    // The destination answers and hangs up after 1.5 s; what it received
    // is traced so its offer can be checked.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("dest.msg");
    let mut dest_leg = play(
        &pbx,
        "c2c_dest.xml",
        "41449876543",
        &dest.to_string(),
        &[
            "-d",
            "1500",
            "-trace_msg",
            "-message_file",
            trace.to_str().unwrap(),
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    click_to_call_connects(&h, &r, &t.key, &|| phone.log()).await;
    // The destination's scenario passes only on INVITE with an offer, ACK
    // and a 200 to its BYE: its leg was established and closed.
    assert!(
        dest_leg.wait().unwrap().success(),
        "destination leg failed\n{}",
        phone.log()
    );
    // The phone rang first: the destination was offered baresip's own SDP,
    // which exists only once the phone has answered.
    let traced = std::fs::read_to_string(&trace).unwrap();
    let invite = traced
        .split("INVITE sip:")
        .nth(1)
        .expect("the destination got no INVITE");
    assert!(
        invite.contains("a=tool:baresip"),
        "the destination's offer is not the phone's:\n{traced}"
    );
    // Baresip answered the host's INVITE, got the destination's answer in
    // the ACK (established) and the BYE passed on from the destination.
    let answered_by_phone = eventually(Duration::from_secs(5), || {
        let log = phone.log();
        (log.contains("Call established") && log.contains("terminated (duration")).then_some(())
    })
    .await;
    assert!(
        answered_by_phone.is_some(),
        "the phone's leg was not established and ended:\n{}",
        phone.log()
    );
    pbx.assert_no_dialogs_left().await;
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
        self.received("subscribe")
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

/// One call from `caller` to the phone of `user` on `port`, answered after
/// 200 ms, hung up by the caller after `talk_ms`.
async fn answered_call(
    pbx: &Pbx,
    user: &str,
    port: u16,
    caller: &str,
    talk_ms: u32,
) -> (Child, Child) {
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
            &talk_ms.to_string(),
        ],
    );
    (answer, call)
}

/// To the phone of 41441234567 on `phone`: an answered call is reported
/// ringing (E.164 caller, also first on the SSE stream), answered, then
/// ended with its talk time; a withheld caller who gives up is ringing,
/// then missed.
async fn answered_and_missed_calls_are_reported(
    pbx: &Pbx,
    phone: u16,
    r: &Receiver,
    sse: &mut Sse,
) {
    let (mut answer, mut caller) =
        answered_call(pbx, "41441234567", phone, "+41791234567", 2000).await;
    let ringing = sse
        .next(Duration::from_secs(10))
        .await
        .expect("ringing on the SSE stream");
    assert_eq!(
        (ringing["state"].as_str(), ringing["caller"].as_str()),
        (Some("ringing"), Some("+41791234567")),
        "{ringing}"
    );
    let evs = call_states(r, Some("+41791234567"), 3).await;
    assert_eq!(states(&evs), ["ringing", "answered", "ended"]);
    assert!(
        evs.iter()
            .all(|e| e["call_id"] == evs[0]["call_id"] && e["licensed_number"] == "+41441234567")
    );
    // Who picked up: the answering phone's contact, as Kamailio reports it
    // while the call rings (connector API 1.1.0 `answered-by`).
    let device = format!("sip:41441234567@127.0.0.1:{phone}");
    assert_eq!(evs[0].get("answered_by"), None, "{evs:?}");
    assert_eq!(evs[1]["answered_by"], device.as_str(), "{evs:?}");
    assert_eq!(evs[2]["answered_by"], device.as_str(), "{evs:?}");
    let duration = evs[2]["duration_secs"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&duration),
        "duration {duration} s for a 2 s call"
    );
    assert!(answer.wait().unwrap().success() && caller.wait().unwrap().success());

    let port = phone.to_string();
    let mut phone_rings = play(pbx, "uas_noanswer.xml", "41441234567", &port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gives_up = sipp(
        pbx,
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
    let evs = call_states(r, None, 2).await;
    assert_eq!(states(&evs), ["ringing", "missed"]);
    let _ = gives_up.wait();
    let _ = phone_rings.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_pbx_gets_every_number_subscribed_again() {
    let Watched {
        pbx,
        phone,
        h,
        r,
        mut sse,
    } = Watched::start(&[("LEANSYNC_SIP_KEEPALIVE_SECS", "1")]).await;

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
    // The restarted PBX forgot the registration too: renewed at once.
    let reregistered = eventually(Duration::from_secs(5), || {
        (!pbx.contacts("leansync").is_empty()).then_some(())
    })
    .await;
    assert!(reregistered.is_some(), "not registered again\n{}", h.log());
    let (mut answer, mut call) =
        answered_call(&pbx, "41441234567", phone, "+41791234567", 500).await;
    let ringing = sse.next(Duration::from_secs(10)).await.unwrap_or_else(|| {
        panic!(
            "a call after the PBX came back is not reported\n{}",
            h.log()
        )
    });
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
    let (mut answer, mut call) =
        answered_call(&pbx, "41441234567", phone, "+41797777777", 500).await;
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

    assert_eq!(status["registration"]["registered"], false, "{status}");
    let why = status["registration"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("refused the credentials"), "{status}");

    // Backoff for the whole account: after the refusal, neither the
    // registration nor a number tries again for a while (each try is two
    // requests: challenge and answer), however many numbers are monitored.
    let after_refusal = (pbx.subscribes_received(), pbx.received("register"));
    assert!(
        after_refusal.0 <= 4 && after_refusal.1 <= 2,
        "{after_refusal:?} SUBSCRIBEs and REGISTERs for 2 numbers before holding back"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (pbx.subscribes_received(), pbx.received("register")),
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
    let (mut answer, mut call) =
        answered_call(&pbx, "41441234567", phone, "+41791234567", 500).await;
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

/// Two hosts on one PostgreSQL database and a customer's SIP account:
/// exactly one host owns the connection (registers, subscribes); when it is
/// killed, the other takes the connection over within the lease and a call
/// that begins after the takeover reaches the app, each state once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_hosts_sip_connection_is_taken_over_by_another_host() {
    use leansync_tests::db::{Backend, TestDb};
    use std::time::Instant;

    let db = TestDb::new(Backend::Postgres).await;
    let pbx = Pbx::start("41441234567:pw fail:failpw-123");
    let phone = free_port();
    register(&pbx, "41441234567", phone);
    let mut a = Host::start(&db.url).await;
    let mut b = Host::start_beside(&a).await;
    let r = Receiver::start().await;
    let t = sip_tenant(&a, &pbx, &r, "Fail", "044 123 45 67", "failpw-123").await;
    let acc = t.telephony.clone();

    // One owner, seen alike by both hosts, subscribed once.
    let on_a = telephony_until(&a, "owned and subscribed", |s| {
        s["owners"][&acc].is_string() && s["accounts"][&acc]["active"] == 1
    })
    .await;
    let owner = on_a["owners"][&acc].as_str().unwrap().to_owned();
    let on_b = telephony_until(&b, "owned by the same host", |s| {
        s["owners"][&acc] == owner.as_str()
    })
    .await;
    let (a_id, b_id) = (on_a["host_id"].clone(), on_b["host_id"].clone());
    assert_ne!(a_id, b_id);
    assert!(owner == a_id || owner == b_id, "{on_a}\n{on_b}");
    let (dead, survivor) = if owner == a_id {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    let started_in_full = |h: &Host| plain(&h.log()).contains("owner=true");
    assert!(
        !started_in_full(survivor),
        "the host that does not own the connection ran it in full:\n{}",
        survivor.log()
    );
    assert!(started_in_full(dead), "{}", dead.log());

    dead.kill9();
    let killed = Instant::now();
    let took_over = telephony_until(survivor, "taken over", |s| {
        s["owners"][&acc] == s["host_id"] && s["accounts"][&acc]["active"] == 1
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!("SIP connection taken over {takeover:?} after SIGKILL");
    assert_eq!(
        took_over["accounts"][&acc]["connected"], true,
        "{took_over}"
    );

    let (mut answer, mut call) =
        answered_call(&pbx, "41441234567", phone, "+41791234567", 300).await;
    let evs = call_states(&r, Some("+41791234567"), 3).await;
    eprintln!(
        "first event through the new owner {:?} after SIGKILL",
        killed.elapsed()
    );
    assert_eq!(states(&evs), ["ringing", "answered", "ended"]);
    assert!(answer.wait().unwrap().success() && call.wait().unwrap().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call_states(&r, Some("+41791234567"), 3).await.len(),
        3,
        "a state reached the app twice"
    );
    drop((a, b));
    db.drop_db().await;
}

/// `text` without terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Registers `user`'s phone with its Contact on `contact_port` (several
/// numbers ringing one SIPp phone).
fn register_at(pbx: &Pbx, user: &str, contact_port: u16) -> bool {
    Command::new("timeout")
        .args(["20", "sipp", "-sf"])
        .arg(scenario("register.xml"))
        .args(["-s", user, "-au", user, "-ap", "pw", "-i", "127.0.0.1"])
        .args(["-set", "contact_port", &contact_port.to_string()])
        .args(["-p", &free_port().to_string(), "-m", "1", "-nostdin"])
        .arg(pbx.addr())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Three hosts on one PostgreSQL database watch 100 numbers through the
/// host's SIP account while SIPp calls them; the host owning the
/// connection is killed mid-load. Another host takes over (takeover time
/// printed), and every call that begins after the takeover reaches the app
/// ringing, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_under_load_lose_no_call_when_the_owner_is_killed() {
    use leansync_tests::db::{Backend, TestDb};
    use std::time::Instant;

    const NUMBERS: usize = 100;
    let users: Vec<String> = (0..NUMBERS).map(|i| format!("414410{i:05}")).collect();
    let mut all: Vec<String> = users.iter().map(|u| format!("{u}:pw")).collect();
    all.push("leansync:monpw".into());
    let pbx = Pbx::start(&all.join(" "));
    let phone = free_port();
    for batch in users.chunks(25) {
        let done: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|u| s.spawn(|| (0..3).any(|_| register_at(&pbx, u, phone))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(done.iter().all(|ok| *ok), "a phone could not register");
    }
    let db = TestDb::new(Backend::Postgres).await;
    let server = pbx.addr();
    let env = [
        ("LEANSYNC_TELEPHONY_PROVIDER", "sip"),
        ("LEANSYNC_SIP_SERVER", server.as_str()),
        ("LEANSYNC_SIP_USERNAME", "leansync"),
        ("LEANSYNC_SIP_PASSWORD", "monpw"),
    ];
    let first = Host::start_with(&db.url, &env).await;
    let second = Host::start_beside(&first).await;
    let third = Host::start_beside(&first).await;
    let mut hosts = [first, second, third];
    let r = Receiver::start().await;
    let numbers: Vec<String> = users.iter().map(|u| format!("+{u}")).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    Tenant::create_licensed(&hosts[0], "Load AG", &refs, &r.url(), NUMBERS).await;

    let watching = |s: &Value| s["owners"]["host"] == s["host_id"] && s["active"] == NUMBERS;
    let mut owner = None;
    for _ in 0..300 {
        for (i, h) in hosts.iter().enumerate() {
            if watching(&h.op("GET", "/api/v1/telephony", None).await) {
                owner = Some(i);
            }
        }
        if owner.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owner = owner.unwrap_or_else(|| panic!("no host watches all {NUMBERS} numbers"));

    // 10 calls/s for 30 s, round-robin over the numbers.
    let callees = pbx.dir.path().join("callees.csv");
    let mut csv = String::from("SEQUENTIAL\n");
    for u in &users {
        csv.push_str(&format!("{u};\n"));
    }
    std::fs::write(&callees, csv).unwrap();
    let sent_log = pbx.dir.path().join("sent.log");
    let mut answer = sipp_for(
        &pbx,
        120,
        &[
            "-sf",
            scenario("uas_answer.xml").to_str().unwrap(),
            "-p",
            &phone.to_string(),
            "-d",
            "0",
            "-timeout",
            "120s",
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut load = sipp_for(
        &pbx,
        90,
        &[
            "-sf",
            scenario("load_call.xml").to_str().unwrap(),
            "-inf",
            callees.to_str().unwrap(),
            "-p",
            &free_port().to_string(),
            // Half a second of talk: a busy machine may be late with a
            // NOTIFY, never so late that a call's first one says ended.
            "-d",
            "500",
            "-r",
            "10",
            "-m",
            "300",
            "-trace_logs",
            "-log_file",
            sent_log.to_str().unwrap(),
        ],
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    hosts[owner].kill9();
    let killed = Instant::now();
    let mut took_over = None;
    'wait: for _ in 0..200 {
        for (i, h) in hosts.iter().enumerate() {
            if i != owner && watching(&h.op("GET", "/api/v1/telephony", None).await) {
                took_over = Some((i, killed.elapsed()));
                break 'wait;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (new_owner, takeover) =
        took_over.unwrap_or_else(|| panic!("no host took the connection over within 10 s"));
    let takeover_at_us = now_us();
    eprintln!("host {new_owner} took the SIP connection over {takeover:?} after SIGKILL");
    let load_status = load.wait().unwrap();

    // Calls whose INVITE left after the takeover.
    let sent = std::fs::read_to_string(&sent_log).unwrap();
    eprintln!(
        "SIPp sent {} calls ({load_status})",
        sent.lines().filter(|l| l.starts_with("SENT ")).count()
    );
    let after: Vec<String> = sent
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("SENT ")?.split_whitespace();
            let id = f.next()?.to_owned();
            // SIPp prints its variables as decimals ("1796650000.000000").
            let s: f64 = f.next()?.parse().ok()?;
            let us: f64 = f.next()?.parse().ok()?;
            (s as u64 * 1_000_000 + us as u64 > takeover_at_us).then(|| format!("sip-{id}"))
        })
        .collect();
    assert!(
        after.len() > 100,
        "only {} calls after the takeover",
        after.len()
    );
    let ringing = |id: &str| {
        r.events()
            .iter()
            .filter(|e| e["call_id"] == id && e["state"] == "ringing")
            .count()
    };
    let missing = eventually(Duration::from_secs(20), || {
        let missing: Vec<&String> = after.iter().filter(|id| ringing(id) == 0).collect();
        missing.is_empty().then_some(())
    })
    .await;
    let lost: Vec<&String> = after.iter().filter(|id| ringing(id) == 0).collect();
    assert!(
        missing.is_some(),
        "{} of {} calls after the takeover never rang in the app, e.g. {:?}",
        lost.len(),
        after.len(),
        lost.first()
    );
    let twice: Vec<&String> = after.iter().filter(|id| ringing(id) > 1).collect();
    assert!(twice.is_empty(), "rang twice: {twice:?}");
    eprintln!(
        "{} calls after the takeover, each rang once in the app",
        after.len()
    );
    let _ = answer.kill();
    let _ = answer.wait();
    drop(hosts);
    db.drop_db().await;
}

/// Runs sipp with `args` for at most `secs` (no call limit of its own).
fn sipp_for(pbx: &Pbx, secs: u32, args: &[&str]) -> Child {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg("sipp")
        .args(args)
        .args(["-i", "127.0.0.1", "-nostdin", &pbx.addr()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}
