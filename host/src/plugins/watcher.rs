//! Hot reload: watches the plugins directory and swaps plugins atomically.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::runtime::PluginRuntime;

/// Quiet period after the last file event before reloading, so a plugin
/// being copied in is read whole.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops hot reload.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir`; every change triggers [`PluginRuntime::reload_dir`].
pub fn watch(runtime: PluginRuntime, dir: &Path) -> anyhow::Result<WatchHandle> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    let dir: PathBuf = dir.to_owned();
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until events stop arriving, then reload once.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let rt = runtime.clone();
            let d = dir.clone();
            let report = tokio::task::spawn_blocking(move || rt.reload_dir(&d)).await;
            if let Ok(r) = report
                && (!r.loaded.is_empty() || !r.removed.is_empty() || !r.failed.is_empty())
            {
                tracing::info!(loaded = ?r.loaded, removed = ?r.removed, failed = r.failed.len(), "plugins reloaded");
            }
        }
    });
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

/// Build output and editor droppings do not trigger reloads.
fn relevant(path: &Path) -> bool {
    !path
        .components()
        .any(|c| c.as_os_str() == "target" || c.as_os_str() == "src")
}
