//! `leansync plugin check|list`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::runtime::{PluginInfo, PluginRuntime};
use crate::config::PluginLimits;

/// A plugin command with its inputs resolved.
pub enum Action {
    /// Validate one plugin folder.
    Check {
        /// The folder.
        path: PathBuf,
        /// Sandbox limits to load it with.
        limits: PluginLimits,
    },
    /// List plugins.
    List {
        /// Running host to ask first.
        host: String,
        /// Directory to scan if the host does not answer.
        plugins_dir: PathBuf,
        /// Sandbox limits to load with.
        limits: PluginLimits,
    },
}

/// Runs a plugin command; the exit code is non-zero on any problem.
pub async fn run(action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::Check { path, limits } => {
            let cache = tempfile_dir()?;
            let rt = PluginRuntime::new(limits, &cache)?;
            let result = rt.load(&path);
            let _ = std::fs::remove_dir_all(&cache);
            match result {
                Ok(p) => {
                    println!(
                        "ok: {} {} (connector API {}), component {} ({})",
                        p.manifest.name,
                        p.manifest.version,
                        p.api_version,
                        p.manifest.component.display(),
                        &p.digest[..12]
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(msg) => {
                    eprintln!("error: {msg}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Action::List {
            host,
            plugins_dir,
            limits,
        } => {
            let url = format!("{}/api/v1/plugins", host.trim_end_matches('/'));
            let from_host = async {
                let resp = reqwest::Client::new()
                    .get(&url)
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                resp.json::<Vec<serde_json::Value>>().await.ok()
            }
            .await;
            let rows: Vec<[String; 5]> = match from_host {
                Some(list) => list.iter().map(row_from_json).collect(),
                None => {
                    eprintln!(
                        "no host answers at {host}; showing plugins found in {}",
                        plugins_dir.display()
                    );
                    let cache = tempfile_dir()?;
                    let rt = PluginRuntime::new(limits, &cache)?;
                    rt.reload_dir(&plugins_dir);
                    let _ = std::fs::remove_dir_all(&cache);
                    rt.list().iter().map(row).collect()
                }
            };
            print_table(&rows);
            let failed = rows.iter().any(|r| r[3] != "active");
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn row(p: &PluginInfo) -> [String; 5] {
    let v = serde_json::to_value(p).unwrap_or_default();
    row_from_json(&v)
}

fn row_from_json(v: &serde_json::Value) -> [String; 5] {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    [
        s("name"),
        s("version"),
        s("api_version"),
        s("status"),
        s("last_error"),
    ]
}

fn print_table(rows: &[[String; 5]]) {
    let header = ["NAME", "VERSION", "API", "STATUS", "LAST ERROR"].map(String::from);
    let mut widths = [0usize; 4];
    for r in std::iter::once(&header).chain(rows) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("leansync-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
