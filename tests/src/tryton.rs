//! A real Tryton server (`trytond` with the `party` module, SQLite) for
//! tests: a copy of a template database in a temp dir, a free loopback
//! port, killed on drop. scripts/test-deps.sh installs it into
//! `target/py/tryton`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::host::free_port;
use crate::plugins::repo_root;

/// The database every test server serves.
pub const DATABASE: &str = "leansync";
/// The admin user's password.
pub const ADMIN_PASSWORD: &str = "tryton-Admin-9";

/// A running trytond.
pub struct Trytond {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    session: Mutex<Option<String>>,
}

fn venv() -> PathBuf {
    repo_root().join("target/py/tryton")
}

/// The initialised database with `party` activated, built once per
/// checkout (trytond-admin takes ~40 s) and copied for every server.
fn template() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("target/py/tryton-db");
    let template = dir.join(format!("{DATABASE}.sqlite"));
    if template.is_file() {
        return template;
    }
    let admin = venv().join("bin/trytond-admin");
    assert!(
        admin.is_file(),
        "{} missing: run scripts/test-deps.sh",
        admin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let conf = write_config(work.path(), 0);
    std::fs::write(work.path().join(format!("{DATABASE}.sqlite")), b"").unwrap();
    std::fs::write(work.path().join("pass"), ADMIN_PASSWORD).unwrap();
    for args in [
        vec!["--all", "--email", "admin@leansync.test"],
        vec!["-u", "party", "--activate-dependencies"],
    ] {
        let out = Command::new(&admin)
            .arg("-c")
            .arg(&conf)
            .args(["-d", DATABASE])
            .args(&args)
            .env("TRYTONPASSFILE", work.path().join("pass"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "trytond-admin {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join("template.tmp");
    std::fs::copy(work.path().join(format!("{DATABASE}.sqlite")), &tmp).unwrap();
    std::fs::rename(&tmp, &template).unwrap();
    template
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("trytond.conf");
    std::fs::write(
        &conf,
        format!(
            "[database]\nuri = sqlite://\npath = {}\n[web]\nlisten = 127.0.0.1:{port}\n",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

impl Trytond {
    /// Starts trytond on a fresh copy of the template database and waits
    /// until it accepts a login.
    pub async fn start() -> Trytond {
        let template = tokio::task::spawn_blocking(template).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::copy(&template, dir.path().join(format!("{DATABASE}.sqlite"))).unwrap();
        let conf = write_config(dir.path(), port);
        let log = std::fs::File::create(dir.path().join("trytond.log")).unwrap();
        let child = Command::new(venv().join("bin/trytond"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start trytond: run scripts/test-deps.sh");
        let mut t = Trytond {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            session: Mutex::new(None),
        };
        let until = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = t.child.try_wait().unwrap() {
                panic!("trytond exited with {status}:\n{}", t.log());
            }
            assert!(
                Instant::now() < until,
                "trytond not up in 60 s:\n{}",
                t.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.login().await;
        t
    }

    /// Everything trytond logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("trytond.log")).unwrap_or_default()
    }

    async fn post(&self, body: Value, session: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/{DATABASE}/", self.url))
            .json(&body);
        if let Some(s) = session {
            req = req.header("authorization", format!("Session {s}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn login(&mut self) {
        let (status, v) = self
            .post(
                json!({ "id": 0, "method": "common.db.login", "params": ["admin", { "password": ADMIN_PASSWORD }, "en"] }),
                None,
            )
            .await;
        assert_eq!(status, 200, "admin login: {v}\n{}", self.log());
        let token = format!(
            "admin:{}:{}",
            v["result"][0],
            v["result"][1].as_str().unwrap()
        );
        use base64::Engine;
        *self.session.lock().unwrap() =
            Some(base64::engine::general_purpose::STANDARD.encode(token));
    }

    /// Calls a JSON-RPC method as admin; panics on an error answer.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let session = self.session.lock().unwrap().clone();
        let (status, v) = self
            .post(
                json!({ "id": 1, "method": method, "params": params }),
                session.as_deref(),
            )
            .await;
        assert_eq!(status, 200, "{method}: {v}");
        assert!(v.get("error").is_none_or(Value::is_null), "{method}: {v}");
        v["result"].clone()
    }

    /// Creates a party with phone contact mechanisms stored as given.
    pub async fn create_party(&self, name: &str, phones: &[&str]) -> i64 {
        let mechanisms: Vec<Value> = phones
            .iter()
            .map(|p| json!({ "type": "phone", "value": p }))
            .collect();
        let ids = self
            .rpc(
                "model.party.party.create",
                json!([[{ "name": name, "contact_mechanisms": [["create", mechanisms]] }], {}]),
            )
            .await;
        ids[0].as_i64().unwrap()
    }

    /// Creates a Tryton user that may log in with `password` (the account
    /// a customer creates for LeanSync).
    pub async fn create_user(&self, login: &str, password: &str) {
        self.rpc(
            "model.res.user.create",
            json!([[{ "name": "LeanSync", "login": login, "password": password }], {}]),
        )
        .await;
    }

    /// The notes on party `id`, oldest first.
    pub async fn notes(&self, party: i64) -> Vec<String> {
        let rows = self
            .rpc(
                "model.ir.note.search_read",
                json!([
                    [["resource", "=", format!("party.party,{party}")]],
                    0,
                    null,
                    [["id", "ASC"]],
                    ["message"],
                    {}
                ]),
            )
            .await;
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Parties named `name`, as (id, phone values).
    pub async fn parties_named(&self, name: &str) -> Vec<(i64, Vec<String>)> {
        let rows = self
            .rpc(
                "model.party.contact_mechanism.search_read",
                json!([
                    [["party.name", "=", name]],
                    0,
                    null,
                    null,
                    ["party", "value"],
                    {}
                ]),
            )
            .await;
        let mut out: Vec<(i64, Vec<String>)> = Vec::new();
        for r in rows.as_array().unwrap() {
            let id = r["party"].as_i64().unwrap();
            let value = r["value"].as_str().unwrap_or_default().to_string();
            match out.iter_mut().find(|(p, _)| *p == id) {
                Some((_, v)) => v.push(value),
                None => out.push((id, vec![value])),
            }
        }
        out
    }
}

impl Drop for Trytond {
    fn drop(&mut self) {
        // The whole process group, in case the server forked workers.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
