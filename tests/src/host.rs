//! A real `leansync serve` process for end-to-end tests: its own data dir,
//! a free port, the repository's bundled plugins, an operator bootstrapped
//! through the CLI; JSON helpers for the API.

use std::path::PathBuf;

use crate::plugins::repo_root;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `leansync` binary built by `cargo build --workspace`, or the one
/// `LEANSYNC_TEST_BIN` names (an older release, to make upgrade fixtures).
pub fn leansync_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LEANSYNC_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("leansync");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build -p leansync-host`",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (also used for UDP by the SIP tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running host.
pub struct Host {
    /// Base URL.
    pub url: String,
    /// Operator API token.
    pub token: String,
    /// Data directory (kept across restarts).
    pub data: PathBuf,
    db_url: String,
    env: Vec<(String, String)>,
    port: u16,
    child: Option<Child>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Bootstraps an operator and starts a host on `db_url` ("" = SQLite in
    /// the data dir).
    pub async fn start(db_url: &str) -> Host {
        Self::start_with(db_url, &[]).await
    }

    /// Like [`Host::start`] with extra environment variables.
    pub async fn start_with(db_url: &str, env: &[(&str, &str)]) -> Host {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut h = Host::unstarted(db_url, env);
        let out = h
            .command()
            .args(["admin", "bootstrap", "--email", "ops@leansync.test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        h.token = stdout
            .lines()
            .find_map(|l| l.strip_prefix("API token (shown only now): "))
            .expect("token line")
            .trim()
            .to_owned();
        h.spawn().await;
        h
    }

    /// Another host of the same service as `first`: same database, same
    /// secret key and environment, its own port and data dir, as hosts
    /// behind one load balancer are. Its `token` is `first`'s operator's.
    pub async fn start_beside(first: &Host) -> Host {
        let mut env = first.env.clone();
        env.push((
            "LEANSYNC_SECRET_KEY_FILE".into(),
            first.data.join("secret.key").display().to_string(),
        ));
        let mut h = Host::unstarted(&first.db_url, env);
        h.token = first.token.clone();
        h.spawn().await;
        h
    }

    /// A host started on `db_url` with `env` and nothing else done first
    /// (no operator bootstrapped): what an operator's process manager
    /// starts. Its `token` is empty.
    pub async fn serve_only(db_url: &str, env: &[(&str, &str)]) -> Host {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut h = Host::unstarted(db_url, env);
        h.spawn().await;
        h
    }

    fn unstarted(db_url: &str, env: Vec<(String, String)>) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        Host {
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            data,
            db_url: db_url.to_owned(),
            env,
            port,
            child: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    /// A `leansync` command with this host's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(leansync_bin());
        c.env("LEANSYNC_DATA_DIR", &self.data)
            .env("LEANSYNC_PLUGINS_DIR", repo_root().join("plugins"))
            .env(
                "LEANSYNC_CACHE_DIR",
                repo_root().join("target/test-plugin-cache"),
            )
            .env("LEANSYNC_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("LEANSYNC_URL", &self.url)
            .env("LEANSYNC_LOG", "info,leansync_host=debug")
            // The tests' peers listen on loopback, which plugins may not
            // reach unless the operator allows it.
            .env("LEANSYNC_PLUGINS_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
            // Likewise the tests' PBX, for customers' SIP telephony accounts.
            .env("LEANSYNC_TELEPHONY_ALLOW_NETWORKS", "127.0.0.0/8,::1/128");
        if !self.db_url.is_empty() {
            c.env("LEANSYNC_DATABASE_URL", &self.db_url);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts (or restarts) the serve process and waits until it is ready.
    pub async fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("host.log"))
            .unwrap();
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("host exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "host not ready in 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the host logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("host.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), "TERM");
            return c.wait().map(|s| s.success()).unwrap_or(false);
        }
        true
    }

    /// A request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, token, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Like [`Host::call`], returning the raw body.
    pub async fn call_text(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// As the operator; panics unless the status is 2xx.
    pub async fn op(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, Some(&self.token), body).await;
        assert!((200..300).contains(&s), "{method} {path} -> {s}: {v}");
        v
    }

    /// As `token`; panics unless 2xx.
    pub async fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, Some(token), body).await;
        assert!((200..300).contains(&s), "{method} {path} -> {s}: {v}");
        v
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One customer set up end to end: admin, telephony account with consent,
/// numbers, a webhook installation, a provisioned and assigned license.
pub struct Tenant {
    /// Customer id.
    pub customer: String,
    /// Customer admin token.
    pub admin: String,
    /// Telephony account id.
    pub telephony: String,
    /// Installation id.
    pub installation: String,
    /// License id.
    pub license: String,
    /// LeanSync Key (secret).
    pub key: String,
    /// Key id.
    pub key_id: String,
    /// The licensed number (E.164).
    pub number: String,
}

impl Tenant {
    /// Sets up a tenant whose `numbers[0]` is licensed for a webhook to `receiver_url`.
    pub async fn create(h: &Host, name: &str, numbers: &[&str], receiver_url: &str) -> Tenant {
        Self::create_licensed(h, name, numbers, receiver_url, 1).await
    }

    /// Like [`Tenant::create`], with the first `licensed` numbers licensed
    /// (one license each); the fields describe the first.
    pub async fn create_licensed(
        h: &Host,
        name: &str,
        numbers: &[&str],
        receiver_url: &str,
        licensed: usize,
    ) -> Tenant {
        Self::create_with(h, name, numbers, webhook(receiver_url), licensed).await
    }

    /// Like [`Tenant::create`] with any installation: `installation` is the
    /// body of `POST /api/v1/customers/{id}/installations`.
    pub async fn create_for(
        h: &Host,
        name: &str,
        numbers: &[&str],
        installation: serde_json::Value,
    ) -> Tenant {
        Self::create_with(h, name, numbers, installation, 1).await
    }

    /// `installation` as in [`Tenant::create_for`], the first `licensed`
    /// numbers licensed to it.
    pub async fn create_with(
        h: &Host,
        name: &str,
        numbers: &[&str],
        installation: serde_json::Value,
        licensed: usize,
    ) -> Tenant {
        let telephony = serde_json::json!({ "provider": "sim", "settings": { "numbers": numbers }, "secret": "pbx-password-123" });
        Self::create_on(h, name, numbers, telephony, installation, licensed).await
    }

    /// The general form: `telephony` is the body of `POST
    /// /api/v1/customers/{id}/telephony-accounts` (the numbers are imported
    /// from it), the rest as in [`Tenant::create_with`].
    pub async fn create_on(
        h: &Host,
        name: &str,
        numbers: &[&str],
        telephony: serde_json::Value,
        installation: serde_json::Value,
        licensed: usize,
    ) -> Tenant {
        let c = h
            .op(
                "POST",
                "/api/v1/customers",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        let customer = c["id"].as_str().unwrap().to_owned();
        let email = format!("admin@{}.test", name.to_lowercase().replace(' ', "-"));
        let a = h
            .op(
                "POST",
                &format!("/api/v1/customers/{customer}/accounts"),
                Some(serde_json::json!({ "email": email })),
            )
            .await;
        let admin = a["token"].as_str().unwrap().to_owned();
        // The account reports the numbers to import (its settings list
        // them); an import takes nothing else.
        let mut telephony = telephony;
        if telephony["settings"].get("numbers").is_none() {
            telephony["settings"]["numbers"] = serde_json::json!(numbers);
        }
        // A simulated account is made by the operator (it is served by the
        // host's own telephony); a customer connects its own PBX itself.
        let maker = if telephony["provider"] == "sim" {
            h.token.clone()
        } else {
            admin.clone()
        };
        let t = h
            .ok(
                &maker,
                "POST",
                &format!("/api/v1/customers/{customer}/telephony-accounts"),
                Some(telephony),
            )
            .await;
        let telephony = t["id"].as_str().unwrap().to_owned();
        h.ok(
            &admin,
            "POST",
            &format!("/api/v1/telephony-accounts/{telephony}/consent"),
            Some(serde_json::json!({ "scope": "numbers" })),
        )
        .await;
        h.ok(
            &admin,
            "POST",
            &format!("/api/v1/telephony-accounts/{telephony}/import"),
            Some(serde_json::json!({ "numbers": numbers })),
        )
        .await;
        let i = h
            .ok(
                &admin,
                "POST",
                &format!("/api/v1/customers/{customer}/installations"),
                Some(installation),
            )
            .await;
        let installation = i["id"].as_str().unwrap().to_owned();
        let l = h
            .ok(
                &admin,
                "POST",
                &format!("/api/v1/installations/{installation}/licenses"),
                Some(serde_json::json!({ "count": licensed })),
            )
            .await;
        let mut first = None;
        for (l, number) in l.as_array().unwrap().iter().zip(numbers) {
            let license = l["id"].as_str().unwrap().to_owned();
            let p = h
                .op(
                    "POST",
                    &format!("/api/v1/licenses/{license}/provision"),
                    None,
                )
                .await;
            let key = p["key"].as_str().unwrap().to_owned();
            let key_id = p["license"]["keys"][0]["id"].as_str().unwrap().to_owned();
            let assigned = h
                .ok(
                    &admin,
                    "POST",
                    &format!("/api/v1/licenses/{license}/assign"),
                    Some(serde_json::json!({ "number": number })),
                )
                .await;
            let number = assigned["number"].as_str().unwrap().to_owned();
            first.get_or_insert((license, key, key_id, number));
        }
        let (license, key, key_id, number) = first.expect("at least one license");
        Tenant {
            customer,
            admin,
            telephony,
            installation,
            license,
            key,
            key_id,
            number,
        }
    }
}

/// A webhook installation posting to `receiver_url` (body of `POST
/// /api/v1/customers/{id}/installations`).
pub fn webhook(receiver_url: &str) -> serde_json::Value {
    serde_json::json!({ "connector": "webhook", "config": { "url": receiver_url, "secret": "whsec" }, "granted_hosts": ["127.0.0.1"] })
}

/// An open SSE stream: parsed `data:` payloads arrive on `events`; the
/// channel closes when the server ends the stream.
pub struct Sse {
    /// Parsed events.
    pub events: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Host {
    /// Opens `GET /api/v1/events?key=...` and waits for the response head.
    pub async fn sse(&self, key: &str) -> Sse {
        self.sse_with(&[("key", key)]).await
    }

    /// Like [`Host::sse`], replaying the stored events after `last_event_id`.
    pub async fn sse_after(&self, key: &str, last_event_id: i64) -> Sse {
        self.sse_with(&[("key", key), ("last_event_id", &last_event_id.to_string())])
            .await
    }

    async fn sse_with(&self, query: &[(&str, &str)]) -> Sse {
        let mut resp = reqwest::Client::new()
            .get(format!("{}/api/v1/events", self.url))
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "SSE refused");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(d) = line.strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str::<Value>(d.trim())
                            && tx.send(v).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Sse { events: rx }
    }
}

impl Sse {
    /// The next event within `timeout`; `None` on timeout or end of stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits until the server closes the stream; returns how long it took,
    /// or `None` if still open after `timeout` (events are discarded).
    pub async fn closed_within(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            match tokio::time::timeout_at((start + timeout).into(), self.events.recv()).await {
                Ok(None) => return Some(start.elapsed()),
                Ok(Some(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Waits until `f` returns `Some`, polling every 20 ms, at most `timeout`.
pub async fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
