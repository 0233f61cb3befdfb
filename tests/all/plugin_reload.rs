//! Hot reload while events flow: the new version takes over within a second,
//! no event is lost and none is handled twice; a broken new version leaves
//! the old one serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leansync_host::plugins::watcher;
use leansync_host::plugins::{Delivery, Status};
use leansync_tests::plugins::*;
use serde_json::json;

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_while_events_flow_loses_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    let folder = install("healthy", &dir);
    let rt = runtime(scratch.path(), test_limits());
    let services = Arc::new(RecordingServices::default());
    rt.set_services(services.clone());
    rt.reload_dir(&dir);
    let _watch = watcher::watch(rt.clone(), &dir).unwrap();

    let sender = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let inst = installation("healthy", json!({}), &[]);
            for i in 0..300 {
                let d = Delivery {
                    idempotency_key: format!("k{i}"),
                    attempt: 1,
                };
                rt.on_call_event(&inst, &ringing(&format!("call{i}")), None, &d)
                    .await
                    .unwrap_or_else(|e| panic!("event {i} failed: {e}"));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    edit_manifest(&folder, "version", "\"2.0.0\"");
    let took = wait_for("version 2.0.0", || {
        rt.list()[0].version.as_deref() == Some("2.0.0")
    })
    .await;
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    sender.await.unwrap();

    let sets = services.kv_sets.lock().unwrap().clone();
    for i in 0..300 {
        let id = format!("call{i}:ringing");
        let n = sets.iter().filter(|(_, k, _)| k.contains(&id)).count();
        assert_eq!(n, 1, "event {id} handled {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_version_leaves_the_old_one_serving() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    let folder = install("healthy", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let _watch = watcher::watch(rt.clone(), &dir).unwrap();

    edit_manifest(&folder, "api", "\"^9.0\"");
    wait_for("the reload problem to be reported", || {
        rt.list()[0].last_error.is_some()
    })
    .await;
    let info = &rt.list()[0];
    assert_eq!(info.status, Status::Active);
    assert!(
        info.last_error
            .as_deref()
            .unwrap()
            .contains("previous one still serving"),
        "{info:?}"
    );
    let d = Delivery {
        idempotency_key: "k".into(),
        attempt: 1,
    };
    rt.on_call_event(
        &installation("healthy", json!({}), &[]),
        &ringing("c"),
        None,
        &d,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_a_folder_takes_effect() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let _watch = watcher::watch(rt.clone(), &dir).unwrap();
    // Stage outside, then move in: how an operator drops a plugin in atomically.
    let staged = install("healthy", scratch.path());
    std::fs::rename(&staged, dir.join("healthy")).unwrap();
    wait_for("the plugin to appear", || rt.get("healthy").is_some()).await;
    std::fs::remove_dir_all(dir.join("healthy")).unwrap();
    wait_for("the plugin to disappear", || rt.get("healthy").is_none()).await;
}

#[test]
fn a_dev_install_survives_reloads_of_the_plugins_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let plugins = scratch.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install("healthy", &plugins);
    let elsewhere = install("noop", &scratch.path().join("elsewhere"));
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&plugins);
    rt.dev_install(&elsewhere).unwrap();
    let report = rt.reload_dir(&plugins);
    assert!(report.removed.is_empty(), "{report:?}");
    let names: Vec<String> = rt.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["healthy", "noop"]);
    // Removing a directory plugin still removes it; the dev install stays.
    std::fs::remove_dir_all(plugins.join("healthy")).unwrap();
    let report = rt.reload_dir(&plugins);
    assert_eq!(report.removed, ["healthy"]);
    assert_eq!(rt.list().len(), 1);
    assert_eq!(rt.list()[0].name, "noop");
}
