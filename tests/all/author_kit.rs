//! The connector author kit as a newcomer uses it: `plugin new` in a folder
//! outside the repository, `plugin build` offline, `plugin test` against the
//! fake app, and `plugin call` against a real local app — no host, database
//! or PBX.

use std::path::Path;
use std::process::{Command, Output};

use leansync_tests::host::leansync_bin;
use leansync_tests::plugins::{built, repo_root};
use leansync_tests::receiver::Receiver;

/// Runs `leansync ARGS` in `cwd` off the async runtime (a local app may be
/// serving on it), offline, with the guests' shared target directory so the
/// SDK's dependencies are not rebuilt.
async fn leansync(cwd: &Path, args: &[&str]) -> (bool, String) {
    let cwd = cwd.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out: Output = tokio::task::spawn_blocking(move || {
        Command::new(leansync_bin())
            .args(&args)
            .current_dir(&cwd)
            .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
            .env("CARGO_NET_OFFLINE", "true")
            .env("PATH", tool_path())
            .env(
                "LEANSYNC_CACHE_DIR",
                repo_root().join("target/test-plugin-cache"),
            )
            .env_remove("LEANSYNC_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Lets a scaffolded connector's manifest ask for apps on this machine, as
/// an author trying it against a local app would.
fn ask_for_loopback(dir: &Path) {
    let manifest = dir.join("plugin.toml");
    let m = std::fs::read_to_string(&manifest).unwrap();
    let asked = m.replace(
        "outbound-hosts = [\"api.example.com\"]",
        "outbound-hosts = [\"api.example.com\", \"127.0.0.1:*\"]",
    );
    assert_ne!(asked, m, "the scaffold's outbound-hosts line changed");
    std::fs::write(&manifest, asked).unwrap();
}

/// PATH with the guest toolchains `scripts/test-deps.sh` installs first.
fn tool_path() -> std::ffi::OsString {
    let tools = repo_root().join("target/guest-tools");
    let mut dirs = vec![tools.join("py/bin"), tools.join("js/node_modules/.bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// What a newcomer does in `lang`: `plugin new NAME` outside the
/// repository, `build`, `test` (and a failing case), then `call` against a
/// real local app: denied until granted, loopback refused until allowed,
/// then the journal entry arrives; a 503 is retryable. Returns the project
/// folder (inside the returned temp dir).
async fn author_flow(lang: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    // Outside the repository, as an author's own project would be.
    let tmp = tempfile::tempdir().unwrap();
    assert!(!tmp.path().starts_with(repo_root()));
    let sdk = repo_root().join("plugin-api");
    let (ok, out) = leansync(
        tmp.path(),
        &[
            "plugin",
            "new",
            name,
            "--lang",
            lang,
            "--sdk",
            sdk.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let dir = tmp.path().join(name);
    assert!(dir.join("plugin.toml").is_file(), "{out}");

    if lang == "js" {
        // Without `[build] command` the language's default runs (the
        // Python project keeps the one the template writes).
        let manifest = dir.join("plugin.toml");
        let m = std::fs::read_to_string(&manifest).unwrap();
        let cut = m
            .find("\n# How `leansync plugin build`")
            .expect("a [build] table");
        std::fs::write(&manifest, &m[..cut]).unwrap();
    }
    let (ok, out) = leansync(&dir, &["plugin", "build", "."]).await;
    assert!(ok, "plugin build failed:\n{out}");
    assert!(
        out.contains(&format!("ok: {name} 0.1.0 (connector API 1.1.0)")),
        "{out}"
    );
    assert!(
        dir.join(format!("{}.wasm", name.replace('-', "_")))
            .is_file()
    );

    if lang == "rust" {
        // The native unit tests the template carries, on the SDK's test host.
        let d = dir.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("cargo")
                .args(["test", "--quiet"])
                .current_dir(&d)
                .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
                .env("CARGO_NET_OFFLINE", "true")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "cargo test of the new project:\n{text}"
        );
        assert!(text.contains("3 passed"), "{text}");
    }
    let (ok, out) = leansync(&dir, &["plugin", "test", "."]).await;
    assert!(ok, "the scaffold's own cases fail:\n{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");

    // A case whose expectation the connector does not meet fails, saying so.
    let case = dir.join("tests/lookup.toml");
    let text = std::fs::read_to_string(&case).unwrap();
    std::fs::write(
        &case,
        text.replace(
            "contact = { name = \"Anna Muster\"",
            "contact = { name = \"Bert Beispiel\"",
        ),
    )
    .unwrap();
    let (ok, out) = leansync(&dir, &["plugin", "test", "."]).await;
    assert!(!ok, "a wrong expectation passed:\n{out}");
    assert!(out.contains("FAIL  lookup"), "{out}");
    assert!(
        out.contains("Bert Beispiel") && out.contains("Anna Muster"),
        "{out}"
    );
    assert!(out.contains("2 passed, 1 failed"), "{out}");
    std::fs::write(&case, text).unwrap();

    // One export against a real local app: the author points base_url at
    // it and lets the manifest ask for the host.
    let app = Receiver::start().await;
    ask_for_loopback(&dir);
    std::fs::write(
        dir.join("settings.json"),
        serde_json::json!({ "base_url": app.url() }).to_string(),
    )
    .unwrap();
    let (ok, event) = leansync(
        &dir,
        &[
            "plugin",
            "event",
            "missed",
            "--from",
            "+4930123456",
            "--to",
            "+4989123456",
        ],
    )
    .await;
    assert!(ok, "{event}");
    std::fs::write(dir.join("missed.json"), &event).unwrap();
    let grant = format!("127.0.0.1:{}", app.addr.port());
    let call = |extra: &'static [&'static str]| {
        let mut args = vec![
            "plugin",
            "call",
            ".",
            "on-call-event",
            "--event",
            "missed.json",
            "--settings",
            "settings.json",
            "--secret",
            "api_token=t0k",
        ];
        args.extend_from_slice(extra);
        args
    };

    // Not granted: denied, naming the fix; nothing reaches the app (and the
    // guest sees an error it can return, not a trap).
    let (ok, out) = leansync(&dir, &call(&[])).await;
    assert!(!ok, "{out}");
    assert!(!out.contains("result: fault"), "{out}");
    assert!(
        out.contains("has not granted") && out.contains("--grant"),
        "{out}"
    );
    assert!(app.received().is_empty());

    // Granted, but loopback is not public: the operator's egress rule holds.
    let mut args = call(&[]);
    args.extend(["--grant", grant.as_str()]);
    let (ok, out) = leansync(&dir, &args).await;
    assert!(!ok, "{out}");
    assert!(out.contains("127.0.0.1"), "{out}");
    assert!(app.received().is_empty(), "loopback reached by default");

    // With the range allowed for this run the app gets the journal entry.
    args.extend(["--allow-network", "127.0.0.1/32"]);
    let (ok, out) = leansync(&dir, &args).await;
    assert!(ok, "{out}");
    assert!(out.contains("result: ok"), "{out}");
    assert!(
        out.contains(&format!("POST {}/calls -> 200", app.url())),
        "{out}"
    );
    assert!(out.contains("journaled missed call"), "{out}");
    let got = app.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].uri.path(), "/calls");
    assert_eq!(got[0].headers["authorization"], "Bearer t0k");
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["state"], "missed");
    assert_eq!(body["number"], "+4930123456");

    // The app failing makes the call retryable, and the exit code says so.
    app.script(&[(503, &[("retry-after", "7")])]);
    args.push("--json");
    let (ok, out) = leansync(&dir, &args).await;
    assert!(!ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["result"], "retryable", "{v}");
    assert_eq!(v["retry_after_ms"], 7000, "{v}");
    assert_eq!(v["requests"][0]["status"], 503, "{v}");
    (tmp, dir)
}

#[tokio::test]
async fn a_new_rust_connector_builds_passes_its_tests_and_runs_alone() {
    author_flow("rust", "acme-crm").await;
}

/// A Python or JavaScript connector written with `plugin new`, loaded into
/// a host, delivers a simulated call to the app through the whole pipeline.
async fn delivered_through_the_pipeline(lang: &str, name: &str) {
    use leansync_tests::host::{Host, Tenant};
    let (_tmp, dir) = author_flow(lang, name).await;
    let h = Host::start_with("", &[("LEANSYNC_PLUGINS_DEV_INSTALLS", "true")]).await;
    let v = h
        .op(
            "POST",
            "/api/v1/plugins/dev",
            Some(serde_json::json!({ "path": dir.display().to_string() })),
        )
        .await;
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["api_version"], "1.1.0", "{v}");
    let app = Receiver::start().await;
    Tenant::create_for(
        &h,
        "Pipeline AG",
        &["044 123 45 67"],
        serde_json::json!({
            "connector": name,
            "config": { "base_url": app.url(), "api_token": "t0k" },
            "granted_hosts": ["127.0.0.1"],
        }),
    )
    .await;
    h.op(
        "POST",
        "/api/v1/sim/calls",
        Some(serde_json::json!({ "to": "044 123 45 67", "from": "+41 79 555 12 34", "answer_after": 0.1, "hangup_after": 0.2, "answered_by": "201" })),
    )
    .await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let journal = loop {
        let got = app.received();
        if let Some(r) = got
            .iter()
            .find(|r| r.method == "POST" && r.uri.path() == "/calls")
        {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "no journal entry in 60 s: {got:?}\n{}",
            h.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(journal.headers["authorization"], "Bearer t0k");
    let body: serde_json::Value = serde_json::from_slice(&journal.body).unwrap();
    assert_eq!(body["state"], "answered", "{body}");
    assert_eq!(body["number"], "+41795551234", "{body}");
    assert_eq!(body["line"], "+41441234567", "{body}");
    assert_eq!(body["answered_by"], "201", "{body}");
    // The ringing call was looked up in the app first.
    assert!(
        app.received()
            .iter()
            .any(|r| r.method == "GET" && r.uri.path() == "/contacts"),
        "{:?}",
        app.received()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_python_connector_builds_passes_its_tests_and_serves_calls() {
    delivered_through_the_pipeline("python", "py-crm").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_javascript_connector_builds_passes_its_tests_and_serves_calls() {
    delivered_through_the_pipeline("js", "js-crm").await;
}

#[tokio::test]
async fn plugin_call_reports_bad_input_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let probe = built("http-probe");
    let (ok, out) = leansync(
        tmp.path(),
        &["plugin", "call", probe.to_str().unwrap(), "on-call-event"],
    )
    .await;
    assert!(!ok);
    assert!(
        out.contains("--event") && out.contains("plugin event"),
        "{out}"
    );
    let (ok, out) = leansync(
        tmp.path(),
        &["plugin", "event", "rung", "--to", "+4989123456"],
    )
    .await;
    assert!(!ok);
    assert!(out.contains("\"rung\"") && out.contains("ringing"), "{out}");
    let (ok, out) = leansync(
        tmp.path(),
        &["plugin", "event", "ringing", "--to", "0891234"],
    )
    .await;
    assert!(!ok);
    assert!(out.contains("--to 0891234"), "{out}");
    let (ok, out) = leansync(tmp.path(), &["plugin", "new", "Acme CRM"]).await;
    assert!(!ok);
    assert!(out.contains("a-z, 0-9"), "{out}");
}

/// Lines a child process printed so far, read by a thread.
struct Printed(std::sync::Arc<std::sync::Mutex<String>>);

impl Printed {
    fn of(child: &mut std::process::Child) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let t = text.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut g = t.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
        });
        Self(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, needle: &str, after: usize) -> usize {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let t = self.text();
            if let Some(i) = t[after.min(t.len())..].find(needle) {
                return after + i + needle.len();
            }
            assert!(
                std::time::Instant::now() < until,
                "no {needle:?} from plugin watch in 120 s:\n{t}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_watch_loads_into_a_running_host_streams_logs_and_reloads_on_change() {
    use leansync_tests::host::{Host, Tenant};
    let tmp = tempfile::tempdir().unwrap();
    let sdk = repo_root().join("plugin-api");
    let (ok, out) = leansync(
        tmp.path(),
        &[
            "plugin",
            "new",
            "watched-crm",
            "--sdk",
            sdk.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let dir = tmp.path().join("watched-crm");
    ask_for_loopback(&dir);

    let h = Host::start_with("", &[("LEANSYNC_PLUGINS_DEV_INSTALLS", "true")]).await;
    let mut child = Command::new(leansync_bin())
        .args([
            "plugin", "watch", ".", "--host", &h.url, "--token", &h.token,
        ])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
        .env("CARGO_NET_OFFLINE", "true")
        .env(
            "LEANSYNC_CACHE_DIR",
            repo_root().join("target/test-plugin-cache"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = Printed::of(&mut child);
    let pos = out.wait_for("==> loaded watched-crm 0.1.0", 0).await;
    let (status, info) = h
        .call("GET", "/api/v1/plugins/watched-crm", None, None)
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["status"], "active", "{info}");

    // A customer's app gets the connector's journal entry, and the
    // connector's log line reaches the author's terminal.
    let app = Receiver::start().await;
    let tenant = Tenant::create_for(
        &h,
        "Watch AG",
        &["044 123 45 67"],
        serde_json::json!({
            "connector": "watched-crm",
            "config": { "base_url": app.url(), "api_token": "t0k" },
            "granted_hosts": ["127.0.0.1"],
        }),
    )
    .await;
    let missed = serde_json::json!({ "to": "044 123 45 67", "from": "+41 79 555 12 34", "answer_after": 0.1, "missed": true });
    h.op("POST", "/api/v1/sim/calls", Some(missed.clone()))
        .await;
    let pos = out.wait_for("journaled missed call", pos).await;
    assert!(
        out.text()
            .contains(&format!("[{}] info", tenant.installation)),
        "{}",
        out.text()
    );
    // The ringing call was looked up (GET /contacts), the missed one journaled.
    let got = app.received();
    assert!(
        got.iter()
            .any(|r| r.method == "GET" && r.uri.path() == "/contacts"),
        "{got:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|r| r.method == "POST" && r.uri.path() == "/calls")
            .count(),
        1,
        "{got:?}"
    );

    // Changing the source rebuilds and reloads it in the running host.
    let lib = dir.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        src.replace("journaled {outcome} call", "noted {outcome} call"),
    )
    .unwrap();
    let pos = out.wait_for("--- change detected", pos).await;
    let pos = out.wait_for("==> loaded watched-crm", pos).await;
    h.op("POST", "/api/v1/sim/calls", Some(missed)).await;
    out.wait_for("noted missed call", pos).await;

    // Loading from a folder is for operators only.
    let (status, body) = h
        .call(
            "POST",
            "/api/v1/plugins/dev",
            Some(&tenant.admin),
            Some(serde_json::json!({ "path": dir.display().to_string() })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = h
        .call(
            "GET",
            "/api/v1/plugins/watched-crm/logs",
            Some(&tenant.admin),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_host_loads_connectors_from_other_folders_only_when_configured() {
    use leansync_tests::host::Host;
    let h = Host::start("").await;
    let (status, body) = h
        .call(
            "POST",
            "/api/v1/plugins/dev",
            Some(&h.token),
            Some(serde_json::json!({ "path": built("noop").display().to_string() })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "dev_installs_off", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plugins.dev_installs"),
        "{body}"
    );
}
