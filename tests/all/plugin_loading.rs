//! Loading plugins: success, version refusal, manifest and component errors,
//! compile-cache reuse across restarts, and the `plugin check` command.

use leansync_host::plugins::engine::Origin;
use leansync_host::plugins::{Delivery, Status};
use leansync_tests::host::leansync_bin;
use leansync_tests::plugins::*;
use serde_json::json;

#[tokio::test]
async fn a_valid_plugin_loads_lists_and_answers() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("healthy", &dir);
    let rt = runtime(scratch.path(), test_limits());
    let report = rt.reload_dir(&dir);
    assert_eq!(report.loaded, vec!["healthy".to_string()], "{report:?}");
    let info = rt.list();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].status, Status::Active);
    assert_eq!(info[0].api_version.as_deref(), Some("1.1.0"));
    let inst = installation("healthy", json!({}), &[]);
    let d = Delivery {
        idempotency_key: "k1".into(),
        attempt: 1,
    };
    rt.on_call_event(&inst, &ringing("c1"), None, &d)
        .await
        .unwrap();
    assert_eq!(rt.list()[0].calls, 1);
}

/// Warm instances (made ahead of time, off the call path) serve one call
/// each and only learn the installation when taken: nothing a guest keeps in
/// memory reaches a later call or another installation.
#[tokio::test(flavor = "multi_thread")]
async fn warm_instances_serve_one_call_each_bound_to_the_calling_installation() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install("healthy", &dir);
    let rt = runtime(scratch.path(), test_limits());
    assert!(rt.reload_dir(&dir).failed.is_empty());
    let a = installation("healthy", json!({ "tenant": "A" }), &[]);
    let b = std::sync::Arc::new(leansync_host::plugins::Installation {
        id: "inst-b".into(),
        config: json!({ "tenant": "B" }),
        ..(*a).clone()
    });
    for i in 0..12 {
        let inst = if i % 2 == 0 { &a } else { &b };
        let resp = rt
            .handle_http(inst, leansync_host::plugins::HttpRequest::default())
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["served_by_this_instance"], 1, "call {i}: {body}");
        assert_eq!(
            body["config"], inst.config,
            "call {i} saw another installation"
        );
        if i % 3 == 0 {
            // Let the background refill run, so warm instances are used.
            let ready = leansync_tests::host::eventually(std::time::Duration::from_secs(5), || {
                (rt.list()[0].warm == test_limits().warm_instances as usize).then_some(())
            })
            .await;
            assert!(
                ready.is_some(),
                "warm instances were not refilled: {:?}",
                rt.list()
            );
        }
    }
}

#[test]
fn an_unsupported_api_version_is_refused_listing_supported_versions() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    edit_manifest(&dir, "api", "\"^2.0\"");
    let rt = runtime(scratch.path(), test_limits());
    let err = rt.load(&dir).err().expect("must be refused");
    assert!(
        err.contains("requires connector API `^2.0`, but this host supports 1.0.0"),
        "{err}"
    );
}

#[test]
fn a_missing_component_says_how_to_build_it() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    edit_manifest(&dir, "component", "\"missing.wasm\"");
    let err = runtime(scratch.path(), test_limits())
        .load(&dir)
        .err()
        .unwrap();
    assert!(err.contains("cannot read component"), "{err}");
    assert!(
        err.contains("cargo build --target wasm32-wasip2 --release"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    std::fs::write(dir.join("garbage.wasm"), b"\0asm not really").unwrap();
    edit_manifest(&dir, "component", "\"garbage.wasm\"");
    let err = runtime(scratch.path(), test_limits())
        .load(&dir)
        .err()
        .unwrap();
    assert!(
        err.contains("is not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn a_manifest_error_names_file_key_and_fix() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    edit_manifest(&dir, "version", "\"one\"");
    let err = runtime(scratch.path(), test_limits())
        .load(&dir)
        .err()
        .unwrap();
    assert!(
        err.contains("plugin.toml: `version = \"one\"` is not a semver version"),
        "{err}"
    );
}

#[test]
fn a_restart_reuses_the_compiled_component() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    let first = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    assert_eq!(first.origin, Origin::Compiled);
    // A new runtime is a restarted host: same cache dir, fresh engine.
    let second = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    assert_eq!(second.origin, Origin::Cache);
    assert_eq!(first.digest, second.digest);
    // A changed component is compiled again.
    let other = install("fault-trap", scratch.path());
    let third = runtime(scratch.path(), test_limits())
        .load(&other)
        .ok()
        .unwrap();
    assert_eq!(third.origin, Origin::Compiled);
}

#[test]
fn a_tampered_or_foreign_cached_component_is_not_loaded() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    let first = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    let cached: Vec<std::path::PathBuf> = std::fs::read_dir(scratch.path().join("cache"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|p| {
            p.to_string_lossy()
                .ends_with(&format!("{}.cwasm", first.digest))
        })
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // Someone who can write into the cache changes one byte of the artifact.
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&cached[0], &bytes).unwrap();
    let again = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    assert_eq!(
        again.origin,
        Origin::Compiled,
        "a tampered artifact was deserialised"
    );
    // Healed: the next start reads the fresh artifact from the cache.
    let healed = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    assert_eq!(healed.origin, Origin::Cache);
    // An artifact made under another key (another host's, or a copied
    // cache folder) is not trusted either.
    std::fs::write(scratch.path().join("cache.key"), [0u8; 32]).unwrap();
    let foreign = runtime(scratch.path(), test_limits())
        .load(&dir)
        .ok()
        .unwrap();
    assert_eq!(foreign.origin, Origin::Compiled);
}

#[test]
fn plugin_check_exits_non_zero_with_the_problem() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = install("healthy", scratch.path());
    let ok = std::process::Command::new(leansync_bin())
        .args(["plugin", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with("ok: healthy"),
        "{ok:?}"
    );

    edit_manifest(&dir, "api", "\"^3\"");
    let bad = std::process::Command::new(leansync_bin())
        .args(["plugin", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("this host supports 1.0.0"), "{stderr}");
}

#[test]
fn the_example_connector_passes_plugin_check() {
    let dir = repo_root().join("examples/hello-connector");
    let out = std::process::Command::new(leansync_bin())
        .args(["plugin", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("ok: hello-connector 0.1.0 (connector API 1.1.0)")
    );
}
