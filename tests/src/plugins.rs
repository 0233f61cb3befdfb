//! Building blocks for plugin tests: built plugin folders, scratch plugin
//! directories and runtimes with their own compile cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use leansync_host::call::{CallEvent, CallState, Direction, now_ms};
use leansync_host::config::PluginLimits;
use leansync_host::number::E164;
use leansync_host::plugins::capabilities::HostPattern;
use leansync_host::plugins::{Installation, PluginRuntime};

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The built folder of a bundled (`plugins/NAME`) or test (`tests/plugins/NAME`) plugin.
pub fn built(name: &str) -> PathBuf {
    let root = repo_root();
    for dir in [
        root.join("plugins").join(name),
        root.join("tests/plugins").join(name),
    ] {
        if dir.join("plugin.toml").is_file() {
            let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
            let component = manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("component"))
                .and_then(|l| l.split('"').nth(1))
                .unwrap_or_else(|| panic!("{} has no component key", dir.display()))
                .to_string();
            assert!(
                dir.join(&component).is_file(),
                "{} is not built: run scripts/build-plugins.sh",
                dir.join(&component).display()
            );
            return dir;
        }
    }
    panic!("no plugin folder named {name} under plugins/ or tests/plugins/")
}

/// Copies a built plugin folder's manifest and component into `dest/NAME`.
pub fn install(name: &str, dest: &Path) -> PathBuf {
    install_as(name, dest, name)
}

/// Like [`install`] into folder `folder`.
pub fn install_as(name: &str, dest: &Path, folder: &str) -> PathBuf {
    let src = built(name);
    let to = dest.join(folder);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let ext = p.extension().and_then(|e| e.to_str());
        if p.file_name().is_some_and(|n| n == "plugin.toml") || ext == Some("wasm") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// Rewrites one `key = value` line of a plugin folder's manifest.
pub fn edit_manifest(dir: &Path, key: &str, value: &str) {
    let path = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with(&format!("{key} "))
                || l.trim_start().starts_with(&format!("{key}="))
            {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no `{key}` in {}", path.display());
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

/// Limits suitable for tests: short deadline, small memory.
pub fn test_limits() -> PluginLimits {
    PluginLimits {
        call_timeout_ms: 1_000,
        memory_limit_mib: 32,
        degraded_after: 3,
        max_instances: 64,
        // Exercise the warm-instance path in every plugin test.
        warm_instances: 2,
        allow_networks: local_peers(),
        dev_installs: false,
    }
}

/// The operator setting that lets plugins reach the tests' local peers
/// (receivers, Radicale, trytond, SaaS fakes), which all listen on
/// loopback; without it plugins may reach public addresses only.
pub fn local_peers() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

/// A runtime with its own cache directory inside `scratch`.
pub fn runtime(scratch: &Path, limits: PluginLimits) -> PluginRuntime {
    PluginRuntime::new(limits, &scratch.join("cache")).unwrap()
}

/// An installation of `plugin` with `config` and the given grants.
pub fn installation(plugin: &str, config: serde_json::Value, grants: &[&str]) -> Arc<Installation> {
    Arc::new(Installation {
        id: format!("inst-{plugin}"),
        customer_id: "cust-1".into(),
        plugin: plugin.into(),
        config,
        secrets: Default::default(),
        granted_hosts: grants
            .iter()
            .map(|g| HostPattern::parse(g).unwrap())
            .collect(),
        allow_networks: Vec::new(),
    })
}

/// A plausible inbound ringing event.
pub fn ringing(call_id: &str) -> CallEvent {
    CallEvent {
        call_id: call_id.into(),
        direction: Direction::Inbound,
        state: CallState::Ringing,
        caller: Some(E164::parse("+41 79 123 45 67").unwrap()),
        callee: E164::parse("044 123 45 67").unwrap(),
        monitored: E164::parse("044 123 45 67").unwrap(),
        started_at_ms: now_ms(),
        answered_at_ms: None,
        ended_at_ms: None,
        duration_secs: None,
        answered_by: None,
    }
}

/// Host services that record what plugins do through the `host` import.
#[derive(Default)]
pub struct RecordingServices {
    inner: leansync_host::plugins::MemoryServices,
    /// Every successful `kv-set`: (installation, key, value).
    pub kv_sets: std::sync::Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl leansync_host::plugins::HostServices for RecordingServices {
    fn kv_get(
        &self,
        installation: &str,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> {
        self.inner.kv_get(installation, key)
    }
    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<u32>,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        self.kv_sets
            .lock()
            .unwrap()
            .push((installation.into(), key.into(), value.clone()));
        self.inner.kv_set(installation, key, value, ttl)
    }
    fn kv_delete(&self, installation: &str, key: &str) -> futures::future::BoxFuture<'static, ()> {
        self.inner.kv_delete(installation, key)
    }
    fn place_call(
        &self,
        i: &Installation,
        from: String,
        to: String,
    ) -> futures::future::BoxFuture<'static, Result<String, String>> {
        self.inner.place_call(i, from, to)
    }
    fn push_to_screen(&self, i: &Installation, e: CallEvent) {
        self.inner.push_to_screen(i, e)
    }
}

/// Host services with the host's own key-value store on a database (what
/// `leansync serve` wires), for runtimes that stand for hosts sharing one.
pub struct DatabaseState(pub leansync_host::plugins::DbKv);

impl DatabaseState {
    /// The store on the database at `url`.
    pub async fn open(url: &str) -> Arc<Self> {
        let db = leansync_host::store::Db::connect(url).await.unwrap();
        Arc::new(Self(leansync_host::plugins::DbKv::open(db).await.unwrap()))
    }
}

impl leansync_host::plugins::HostServices for DatabaseState {
    fn kv_get(
        &self,
        installation: &str,
        key: &str,
    ) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> {
        self.0.get_boxed(installation, key)
    }
    fn kv_set(
        &self,
        installation: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<u32>,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        self.0.set_boxed(installation, key, value, ttl)
    }
    fn kv_delete(&self, installation: &str, key: &str) -> futures::future::BoxFuture<'static, ()> {
        self.0.delete_boxed(installation, key)
    }
    fn place_call(
        &self,
        _: &Installation,
        _: String,
        _: String,
    ) -> futures::future::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("no telephony in this test".to_string()) })
    }
    fn push_to_screen(&self, _: &Installation, _: CallEvent) {}
}
