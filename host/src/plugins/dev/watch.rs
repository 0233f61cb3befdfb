//! `leansync plugin watch DIR --host URL`: builds the connector, loads it
//! into a running host from its folder (a dev install), prints its log
//! lines as the host streams them, and rebuilds and reloads on every change
//! of its sources.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::build;
use crate::config::PluginLimits;
use crate::plugins::manifest::Manifest;

/// Quiet period after the last change before rebuilding (editors write
/// several files, or one file several times).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Runs until interrupted; `Err` only for set-up problems (no such folder,
/// no host).
pub async fn watch(
    dir: &Path,
    host: &str,
    token: Option<&str>,
    limits: &PluginLimits,
) -> Result<(), String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let host = host.trim_end_matches('/').to_string();
    let token = token.map(str::to_owned).ok_or(
        "watch needs an operator token: pass --token or set LEANSYNC_TOKEN (`leansync admin token EMAIL` prints one)",
    )?;
    let client = reqwest::Client::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let root = dir.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| is_source(&root, p))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    println!("watching {} (Ctrl-C stops); host {host}", dir.display());
    let mut logs: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if let Some(name) = rebuild_and_install(&client, &dir, &host, &token, limits).await
            && logs.as_ref().is_none_or(|t| t.is_finished())
        {
            logs = Some(tokio::spawn(stream_logs(
                client.clone(),
                host.clone(),
                token.clone(),
                name,
            )));
        }
        // Wait for a change, then for the writes to settle.
        if rx.recv().await.is_none() {
            return Ok(());
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        println!("--- change detected, rebuilding");
    }
}

/// One build and dev install; the plugin's name when it is installed.
async fn rebuild_and_install(
    client: &reqwest::Client,
    dir: &Path,
    host: &str,
    token: &str,
    limits: &PluginLimits,
) -> Option<String> {
    let d = dir.to_owned();
    let l = limits.clone();
    match tokio::task::spawn_blocking(move || build::build(&d, &l)).await {
        Ok(Ok(_)) => {}
        Ok(Err(msg)) => {
            println!("error: {msg}\nwaiting for the next change");
            return None;
        }
        Err(e) => {
            println!("error: build task failed: {e}");
            return None;
        }
    }
    let res = client
        .post(format!("{host}/api/v1/plugins/dev"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "path": dir.display().to_string() }))
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    match res {
        Err(e) => {
            println!("error: cannot reach the host at {host} ({e}); is `leansync serve` running?");
            None
        }
        Ok(r) if r.status().is_success() => {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let name = v["name"].as_str().unwrap_or_default().to_string();
            println!(
                "==> loaded {} {} (connector API {}) into {host}",
                name,
                v["version"].as_str().unwrap_or("?"),
                v["api_version"].as_str().unwrap_or("?")
            );
            Some(name)
        }
        Ok(r) => {
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            println!("error: the host refused the plugin ({status}): {msg}");
            // Keep the name so the log stream still starts if an older
            // version of it is loaded.
            Manifest::load(dir)
                .ok()
                .map(|m| m.name)
                .filter(|_| status == 422)
        }
    }
}

/// Prints the plugin's log lines from the host's stream until it ends.
async fn stream_logs(client: reqwest::Client, host: String, token: String, name: String) {
    let url = format!("{host}/api/v1/plugins/{name}/logs");
    let mut resp = match client.get(&url).bearer_auth(&token).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            println!("note: no log stream ({}) from {url}", r.status());
            return;
        }
        Err(e) => {
            println!("note: no log stream from {url}: {e}");
            return;
        }
    };
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim())
                    && v.get("message").is_some()
                {
                    println!(
                        "[{}] {:5} {}",
                        v["installation"].as_str().unwrap_or("?"),
                        v["level"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// Changes that call for a rebuild: sources, manifest, build files — not
/// build output, the component itself or VCS and editor files.
fn is_source(root: &Path, path: &Path) -> bool {
    let path = path.strip_prefix(root).unwrap_or(path);
    let skip_dir = path.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c == "target" || c == "node_modules" || c == "__pycache__" || c.starts_with('.')
    });
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    !skip_dir && !matches!(ext, "wasm" | "tmp" | "swp" | "lock") && !name.ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sources_trigger_a_rebuild() {
        // The project itself may live below a hidden folder (/tmp/.tmpXYZ).
        let root = Path::new("/tmp/.tmpA1/acme");
        let f = |p: &str| is_source(root, &root.join(p));
        assert!(f("src/lib.rs"));
        assert!(f("plugin.toml"));
        assert!(f("tests/lookup.toml"));
        assert!(!f("target/release/x.rlib"));
        assert!(!f("acme_crm.wasm"));
        assert!(!f("acme_crm.wasm.tmp"));
        assert!(!f(".git/index"));
        assert!(!f("Cargo.lock"));
    }
}
