//! A plugin that loops, traps, panics or eats memory costs its own call only:
//! a healthy plugin called at the same time keeps answering, and the faulty
//! one ends `degraded` with its last error.

use std::time::{Duration, Instant};

use leansync_host::plugins::{Delivery, InvokeError, Status};
use leansync_tests::plugins::*;
use serde_json::json;

async fn fault_costs_one_call(fault: &str, expected: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install(fault, &dir);
    install("healthy", &dir);
    let limits = test_limits();
    let rt = runtime(scratch.path(), limits.clone());
    assert_eq!(rt.reload_dir(&dir).failed, vec![]);
    let bad = installation(fault, json!({}), &[]);
    let good = installation("healthy", json!({}), &[]);
    let d = |i: u32| Delivery {
        idempotency_key: format!("k{i}"),
        attempt: 1,
    };

    let faults = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let mut errors = vec![];
            for i in 0..limits.degraded_after {
                errors.push(
                    rt.on_call_event(&bad, &ringing(&format!("bad{i}")), None, &d(i))
                        .await,
                );
            }
            errors
        })
    };
    let mut healthy_calls = 0;
    let mut slowest = Duration::ZERO;
    // Keep calling the healthy plugin while the faulty one runs (and a few
    // times at least, for faults that end fast).
    while !faults.is_finished() || healthy_calls < 5 {
        let t = Instant::now();
        rt.on_call_event(
            &good,
            &ringing(&format!("good{healthy_calls}")),
            None,
            &d(0),
        )
        .await
        .expect("healthy plugin keeps answering");
        slowest = slowest.max(t.elapsed());
        healthy_calls += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for r in faults.await.unwrap() {
        match r {
            Err(InvokeError::Fault(msg)) => {
                assert!(msg.contains(expected), "`{expected}` not in `{msg}`")
            }
            other => panic!("expected a fault, got {other:?}"),
        }
    }
    assert!(healthy_calls > 0);
    // Far below the 1 s deadline the faulty plugin burns: it was not starved.
    assert!(
        slowest < Duration::from_millis(500),
        "healthy call took {slowest:?}"
    );

    let list = rt.list();
    let f = list.iter().find(|p| p.name == fault).unwrap();
    assert_eq!(f.status, Status::Degraded);
    assert!(f.last_error.as_deref().unwrap().contains(expected), "{f:?}");
    let h = list.iter().find(|p| p.name == "healthy").unwrap();
    assert_eq!(h.status, Status::Active);

    // Circuit open: the next call is not attempted.
    let next = rt
        .on_call_event(
            &installation(fault, json!({}), &[]),
            &ringing("x"),
            None,
            &d(9),
        )
        .await;
    assert!(
        matches!(next, Err(InvokeError::Degraded { .. })),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    fault_costs_one_call("fault-loop", "exceeded its 1000 ms deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_costs_one_call() {
    fault_costs_one_call("fault-trap", "trapped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_reported_with_its_message() {
    fault_costs_one_call("fault-panic", "panicked at").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    fault_costs_one_call("fault-oom", "exceeded its memory limit of 32 MiB").await;
}

#[tokio::test]
async fn a_degraded_plugin_recovers_on_reload() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    let folder = install("fault-trap", &dir);
    let rt = runtime(scratch.path(), test_limits());
    rt.reload_dir(&dir);
    let inst = installation("fault-trap", json!({}), &[]);
    let d = Delivery {
        idempotency_key: "k".into(),
        attempt: 1,
    };
    for i in 0..3 {
        let _ = rt
            .on_call_event(&inst, &ringing(&format!("c{i}")), None, &d)
            .await;
    }
    assert_eq!(rt.list()[0].status, Status::Degraded);
    edit_manifest(&folder, "version", "\"1.0.1\"");
    rt.reload_dir(&dir);
    let info = &rt.list()[0];
    assert_eq!(info.status, Status::Active);
    assert_eq!(info.version.as_deref(), Some("1.0.1"));
}
