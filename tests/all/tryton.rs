//! The bundled `tryton` connector against a real trytond with the party
//! module: parties are found whatever format their phone numbers are typed
//! in; answered and missed calls become notes on the party (once, even when
//! a delivery is retried; internal calls left out); an unknown caller gets a
//! party only when enabled; a bad password is a permanent error naming the
//! fix; and through the real host a call pops the party on the live stream
//! and leaves the note in Tryton.

use std::sync::Arc;
use std::time::Duration;

use leansync_host::call::{CallEvent, CallState, Direction, now_ms};
use leansync_host::config::PluginLimits;
use leansync_host::number::E164;
use leansync_host::plugins::{Delivery, Installation, InvokeError, PluginRuntime};
use leansync_tests::host::{Host, Tenant};
use leansync_tests::plugins::*;
use leansync_tests::tryton::{DATABASE, Trytond};
use serde_json::{Value, json};

const LOGIN: &str = "leansync";
const PASSWORD: &str = "LeanSync-Connector-42";

fn limits() -> PluginLimits {
    PluginLimits {
        call_timeout_ms: 30_000,
        memory_limit_mib: 64,
        degraded_after: 3,
        max_instances: 64,
        allow_networks: leansync_tests::plugins::local_peers(),
        dev_installs: false,
        ..PluginLimits::default()
    }
}

fn tryton(id: &str, server: &Trytond, extra: Value) -> Arc<Installation> {
    let mut config = json!({ "url": server.url, "database": DATABASE, "username": LOGIN });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut inst = (*installation("tryton", config, &["127.0.0.1:*"])).clone();
    inst.id = id.into();
    inst.secrets.insert("password".into(), PASSWORD.into());
    Arc::new(inst)
}

fn runtime_with_tryton(scratch: &std::path::Path) -> PluginRuntime {
    let dir = scratch.join("plugins");
    install("tryton", &dir);
    let rt = runtime(scratch, limits());
    let report = rt.reload_dir(&dir);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    rt
}

async fn server() -> Trytond {
    let t = Trytond::start().await;
    t.create_user(LOGIN, PASSWORD).await;
    t
}

fn finished(call: &str, caller: &str, state: CallState, direction: Direction) -> CallEvent {
    let start = now_ms() - 60_000;
    CallEvent {
        call_id: call.into(),
        direction,
        state,
        caller: Some(E164::parse(caller).unwrap()),
        callee: E164::parse("044 123 45 00").unwrap(),
        monitored: E164::parse("044 123 45 00").unwrap(),
        started_at_ms: start,
        answered_at_ms: (state == CallState::Ended).then_some(start + 5_000),
        ended_at_ms: Some(start + 50_000),
        duration_secs: (state == CallState::Ended).then_some(45),
        answered_by: None,
    }
}

fn delivery(attempt: u32) -> Delivery {
    Delivery {
        idempotency_key: "idem".into(),
        attempt,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parties_are_found_whatever_format_the_number_is_stored_in() {
    let t = server().await;
    let anna = t.create_party("Anna Muster", &["044 123 45 67"]).await;
    let beat = t
        .create_party("Beat Beispiel", &["+41 44 123 45 68", "079 123 45 68"])
        .await;
    let cleo = t.create_party("Cleo Test", &["0041441234569"]).await;
    let dora = t.create_party("Dora Neu", &["+41 (0)44 123 45 70"]).await;
    // Ends in the same 7 digits as Anna's number: found by the ending-digits
    // search, then dropped because it is another number.
    t.create_party("Eva Endung", &["0431234567"]).await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_tryton(scratch.path());
    let inst = tryton("i-find", &t, json!({}));
    for (number, name, id) in [
        ("+41441234567", "Anna Muster", anna),
        ("+41441234568", "Beat Beispiel", beat),
        ("+41791234568", "Beat Beispiel", beat),
        ("+41441234569", "Cleo Test", cleo),
        ("+41441234570", "Dora Neu", dora),
    ] {
        let c = rt
            .lookup_contact(&inst, number)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{number} not found"));
        assert_eq!(c.name, name);
        assert_eq!(c.source, "tryton");
        let authority = t.url.trim_start_matches("http://");
        assert_eq!(
            c.deep_link,
            Some(format!(
                "tryton://{authority}/{DATABASE}/model/party.party/{id}"
            ))
        );
    }
    assert_eq!(
        rt.lookup_contact(&inst, "+41441234571").await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_and_missed_calls_become_notes_on_the_party() {
    let t = server().await;
    let anna = t.create_party("Anna Muster", &["044 123 45 67"]).await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_tryton(scratch.path());
    let inst = tryton("i-notes", &t, json!({ "own_numbers": ["044 123 45 00"] }));

    let answered = finished(
        "call-a",
        "+41441234567",
        CallState::Ended,
        Direction::Inbound,
    );
    rt.on_call_event(&inst, &answered, None, &delivery(1))
        .await
        .unwrap();
    let missed = finished(
        "call-m",
        "+41441234567",
        CallState::Missed,
        Direction::Inbound,
    );
    rt.on_call_event(&inst, &missed, None, &delivery(1))
        .await
        .unwrap();
    // A retried delivery of a note already written adds nothing.
    rt.on_call_event(&inst, &missed, None, &delivery(2))
        .await
        .unwrap();
    // Ringing writes nothing; internal calls are left out.
    let ringing = finished(
        "call-r",
        "+41441234567",
        CallState::Ringing,
        Direction::Inbound,
    );
    rt.on_call_event(&inst, &ringing, None, &delivery(1))
        .await
        .unwrap();
    let internal = finished(
        "call-i",
        "+41441234567",
        CallState::Ended,
        Direction::Internal,
    );
    rt.on_call_event(&inst, &internal, None, &delivery(1))
        .await
        .unwrap();

    let notes = t.notes(anna).await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes[0].starts_with(
            "Answered inbound call from +41441234567 to +41441234500, duration 0:45, "
        ),
        "{}",
        notes[0]
    );
    assert!(notes[0].ends_with("UTC [leansync call-a]"), "{}", notes[0]);
    assert!(
        notes[1].starts_with("Missed inbound call from +41441234567 to +41441234500, "),
        "{}",
        notes[1]
    );
    assert!(!notes[1].contains("duration"), "{}", notes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_caller_gets_a_party_only_when_enabled() {
    let t = server().await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_tryton(scratch.path());
    let caller = "+41791112233";
    let call = finished("call-u", caller, CallState::Missed, Direction::Inbound);

    let off = tryton("i-off", &t, json!({}));
    rt.on_call_event(&off, &call, None, &delivery(1))
        .await
        .unwrap();
    assert!(t.parties_named("Caller +41791112233").await.is_empty());

    let on = tryton("i-on", &t, json!({ "create_unknown_callers": true }));
    rt.on_call_event(&on, &call, None, &delivery(1))
        .await
        .unwrap();
    let created = t.parties_named("Caller +41791112233").await;
    assert_eq!(created.len(), 1, "{created:?}");
    let (id, phones) = &created[0];
    assert_eq!(phones, &vec![caller.to_string()]);
    let notes = t.notes(*id).await;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("Missed inbound call from +41791112233"),
        "{}",
        notes[0]
    );
    // The new party is found at once (no stale "not found" in the cache)
    // and the next call does not create another one.
    let c = rt.lookup_contact(&on, caller).await.unwrap().unwrap();
    assert_eq!(c.name, "Caller +41791112233");
    let again = finished("call-u2", caller, CallState::Ended, Direction::Inbound);
    rt.on_call_event(&on, &again, None, &delivery(1))
        .await
        .unwrap();
    assert_eq!(t.parties_named("Caller +41791112233").await.len(), 1);
    assert_eq!(t.notes(*id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_numbers_follow_the_configured_rule() {
    let t = server().await;
    let a = t.create_party("Anna Muster", &["044 123 45 67"]).await;
    let b = t.create_party("Beat Muster", &["+41441234567"]).await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_tryton(scratch.path());
    let call = |id: &str| finished(id, "+41441234567", CallState::Missed, Direction::Inbound);
    for (rule, id) in [("none", "c-none"), ("first", "c-first"), ("all", "c-all")] {
        let inst = tryton(&format!("i-{rule}"), &t, json!({ "shared_number": rule }));
        rt.on_call_event(&inst, &call(id), None, &delivery(1))
            .await
            .unwrap();
    }
    let on_a = t.notes(a).await.join("\n");
    let on_b = t.notes(b).await.join("\n");
    assert!(
        !on_a.contains("c-none") && !on_b.contains("c-none"),
        "none: no note"
    );
    assert!(
        on_a.contains("c-first") && !on_b.contains("c-first"),
        "first: the older party"
    );
    assert!(
        on_a.contains("c-all") && on_b.contains("c-all"),
        "all: both"
    );
    let all = tryton("i-all", &t, json!({}));
    let c = rt
        .lookup_contact(&all, "+41441234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.name, "Anna Muster / Beat Muster");
    assert_eq!(c.deep_link, None, "no single party to open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_permanent_error_naming_the_fix() {
    let t = server().await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_tryton(scratch.path());
    let mut inst = (*tryton("i-pw", &t, json!({}))).clone();
    inst.secrets
        .insert("password".into(), "wrong-password".into());
    let err = rt
        .lookup_contact(&Arc::new(inst), "+41441234567")
        .await
        .unwrap_err();
    let InvokeError::Permanent(msg) = &err else {
        panic!("expected a permanent error, got {err:?}")
    };
    assert!(
        msg.contains("refused the login of user 'leansync'")
            && msg.contains("check the username and the password"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_pops_the_party_and_leaves_a_note_in_tryton() {
    let t = server().await;
    let anna = t.create_party("Anna Muster", &["079 555 12 34"]).await;
    let h = Host::start("").await;
    let tenant = Tenant::create_for(
        &h,
        "Tryton AG",
        &["044 123 45 67"],
        json!({
            "connector": "tryton",
            "config": { "url": t.url, "database": DATABASE, "username": LOGIN, "password": PASSWORD },
            "granted_hosts": ["127.0.0.1"],
        }),
    )
    .await;
    let mut sse = h.sse(&tenant.key).await;
    let v = h
        .op(
            "POST",
            "/api/v1/sim/calls",
            Some(json!({ "to": "044 123 45 67", "from": "+41 79 555 12 34", "answer_after": 0.2, "hangup_after": 1.0, "answered_by": "201" })),
        )
        .await;
    let call = v["call_id"].as_str().unwrap().to_owned();
    let ringing = sse
        .next(Duration::from_secs(10))
        .await
        .expect("ringing on the SSE stream");
    assert_eq!(ringing["call_id"], call.as_str());
    assert_eq!(
        ringing["contact"]["name"],
        "Anna Muster",
        "{ringing}\n{}",
        h.log()
    );
    assert_eq!(
        ringing["contact"]["deep_link"],
        format!(
            "tryton://{}/{DATABASE}/model/party.party/{anna}",
            t.url.trim_start_matches("http://")
        )
    );
    // The note appears in Tryton once the call has ended.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let notes = loop {
        let notes = t.notes(anna).await;
        if !notes.is_empty() {
            break notes;
        }
        assert!(
            std::time::Instant::now() < until,
            "no note in Tryton after 20 s:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]
            .starts_with("Answered inbound call from +41795551234 to +41441234567, duration 0:0"),
        "{}",
        notes[0]
    );
    assert!(
        notes[0].contains(&format!("[leansync {call}]")),
        "{}",
        notes[0]
    );
    // Who picked up travels from the telephony to the note (connector API 1.1.0).
    assert!(notes[0].contains(", answered by 201, "), "{}", notes[0]);
}
