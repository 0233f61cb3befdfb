//! The bundled `carddav` connector against a real Radicale server: callers
//! resolve to names whatever format the address book stores the number in,
//! at 10,000 cards; changes on the server reach lookups through WebDAV sync;
//! shared numbers and the company's own numbers follow the configured rules;
//! credential errors name the fix; and through the real host, a call shows
//! the name on the live stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leansync_host::config::PluginLimits;
use leansync_host::plugins::{Installation, InvokeError, PluginRuntime};
use leansync_tests::host::{Host, Tenant};
use leansync_tests::plugins::*;
use leansync_tests::radicale::{PASSWORD, Radicale, USER, vcard};
use serde_json::{Value, json};

/// Limits for a cold index build of a large book in a debug build.
fn roomy_limits() -> PluginLimits {
    PluginLimits {
        call_timeout_ms: 120_000,
        memory_limit_mib: 256,
        degraded_after: 3,
        max_instances: 64,
        allow_networks: leansync_tests::plugins::local_peers(),
        dev_installs: false,
        ..PluginLimits::default()
    }
}

fn carddav(id: &str, config: Value) -> Arc<Installation> {
    let mut inst = (*installation("carddav", config, &["127.0.0.1:*"])).clone();
    inst.id = id.into();
    inst.secrets.insert("password".into(), PASSWORD.into());
    Arc::new(inst)
}

fn runtime_with_carddav(scratch: &std::path::Path, limits: PluginLimits) -> PluginRuntime {
    let dir = scratch.join("plugins");
    install("carddav", &dir);
    let rt = runtime(scratch, limits);
    let report = rt.reload_dir(&dir);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    rt
}

async fn name_of(rt: &PluginRuntime, inst: &Arc<Installation>, number: &str) -> Option<String> {
    rt.lookup_contact(inst, number)
        .await
        .unwrap_or_else(|e| panic!("lookup {number}: {e}"))
        .map(|c| c.name)
}

/// The mobile number of generated card `i`: 7 distinct digits after 079.
fn digits(i: usize) -> String {
    format!("{:07}", 1_000_000 + i * 13)
}

/// Card `i`'s number in one of the formats people type.
fn stored_form(i: usize) -> String {
    let d = digits(i);
    let (a, b, c) = (&d[..3], &d[3..5], &d[5..]);
    match i % 6 {
        0 => format!("079 {a} {b} {c}"),
        1 => format!("+41 79 {a} {b} {c}"),
        2 => format!("004179{d}"),
        3 => format!("+4179{d}"),
        4 => format!("+41 (0)79 {a}-{b}-{c}"),
        _ => format!("tel:+41-79-{a}-{b}-{c}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cards_in_mixed_formats_resolve_by_e164() {
    const CARDS: usize = 10_000;
    let radicale = Radicale::start();
    let cards: Vec<(String, String)> = (0..CARDS)
        .map(|i| {
            let uid = format!("c{i}");
            let mut tels = vec![stored_form(i)];
            if i % 7 == 0 {
                tels.push(format!("044/{:03}.{:02}.{:02}", i % 1000, i % 97, i % 89));
            }
            let tels: Vec<&str> = tels.iter().map(String::as_str).collect();
            let card = vcard(
                &uid,
                &format!("Kontakt {i} Muster"),
                &format!("Firma {} AG", i % 300),
                &tels,
            );
            (uid, card)
        })
        .collect();
    radicale.write_book("kunden", &cards);
    let t = Instant::now();
    radicale.warm("kunden").await;
    println!(
        "radicale: first read of {CARDS} cards (its cache build) {:?}",
        t.elapsed()
    );

    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_carddav(scratch.path(), roomy_limits());
    let inst = carddav(
        "inst-big",
        json!({ "url": radicale.book_url("kunden"), "username": USER, "refresh_secs": 3600 }),
    );

    // The first lookup builds the index from one full sync.
    let t = Instant::now();
    assert_eq!(
        name_of(&rt, &inst, &format!("+4179{}", digits(1)))
            .await
            .as_deref(),
        Some("Kontakt 1 Muster")
    );
    let cold = t.elapsed();
    println!("carddav: cold lookup (full sync + index of {CARDS} cards) {cold:?}");

    // 20 callers sampled across the book and every stored format.
    let samples: Vec<usize> = (0..20).map(|k| k * 499 + k % 6).collect();
    let mut times = Vec::new();
    for &i in &samples {
        let caller = format!("+4179{}", digits(i));
        let t = Instant::now();
        let contact = rt.lookup_contact(&inst, &caller).await.unwrap();
        times.push(t.elapsed());
        let contact = contact
            .unwrap_or_else(|| panic!("{caller} (stored as '{}') not found", stored_form(i)));
        assert_eq!(contact.name, format!("Kontakt {i} Muster"), "{caller}");
        assert_eq!(contact.organisation, Some(format!("Firma {} AG", i % 300)));
        assert_eq!(contact.source, "carddav");
    }
    // The second TEL of a card is found too.
    assert_eq!(
        name_of(&rt, &inst, "+41440070707").await.as_deref(),
        Some("Kontakt 7 Muster")
    );
    // An unknown number resolves to nothing.
    assert_eq!(name_of(&rt, &inst, "+41799999999").await, None);

    times.sort();
    println!(
        "carddav: 20 sampled lookups on {CARDS} cards: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    // A burst: 200 more lookups of those callers.
    let mut burst = Vec::new();
    for round in 0..10 {
        for &i in &samples {
            let t = Instant::now();
            let n = name_of(&rt, &inst, &format!("+4179{}", digits(i))).await;
            burst.push(t.elapsed());
            assert!(n.is_some(), "round {round}, card {i}");
        }
    }
    burst.sort();
    println!(
        "carddav: burst of 200 lookups: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&burst, 0.5),
        percentile(&burst, 0.99),
        burst[burst.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_changes_reach_lookups_through_sync() {
    let radicale = Radicale::start();
    radicale.create_book("team").await;
    radicale
        .put_card(
            "team",
            "anna",
            &vcard("anna", "Anna Muster", "Muster AG", &["044 123 45 67"]),
        )
        .await;
    radicale
        .put_card(
            "team",
            "beat",
            &vcard(
                "beat",
                "Beat Beispiel",
                "Beispiel GmbH",
                &["+41 44 123 45 99"],
            ),
        )
        .await;
    radicale
        .put_card(
            "team",
            "cleo",
            &vcard("cleo", "Cleo Test", "Beispiel GmbH", &["0041441234599"]),
        )
        .await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_carddav(scratch.path(), roomy_limits());
    let inst = carddav(
        "inst-sync",
        json!({ "url": radicale.book_url("team"), "username": USER, "refresh_secs": 1 }),
    );
    let anna = rt
        .lookup_contact(&inst, "+41441234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(anna.name, "Anna Muster");
    assert_eq!(anna.organisation.as_deref(), Some("Muster AG"));
    assert_eq!(
        name_of(&rt, &inst, "+41441234599").await.as_deref(),
        Some("Beat Beispiel / Cleo Test")
    );

    // Anna gets a new number, Dora joins, Cleo leaves.
    radicale
        .put_card(
            "team",
            "anna",
            &vcard("anna", "Anna Muster", "Muster AG", &["079 123 45 67"]),
        )
        .await;
    radicale
        .put_card(
            "team",
            "dora",
            &vcard("dora", "Dora Neu", "Neu AG", &["+41 44 123 45 70"]),
        )
        .await;
    radicale.delete_card("team", "cleo").await;
    // Polled like `eventually`, with async lookups: the index is re-synced
    // once its 1 s freshness has expired.
    let until = Instant::now() + Duration::from_secs(20);
    let synced = loop {
        let seen = (
            name_of(&rt, &inst, "+41441234570").await,
            name_of(&rt, &inst, "+41791234567").await,
            name_of(&rt, &inst, "+41441234567").await,
            name_of(&rt, &inst, "+41441234599").await,
        );
        if seen.0.is_some() {
            break seen;
        }
        assert!(
            Instant::now() < until,
            "the new card was not found within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        synced,
        (
            Some("Dora Neu".to_string()),
            Some("Anna Muster".to_string()),
            None,
            Some("Beat Beispiel".to_string())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_own_numbers_follow_the_configured_rules() {
    let radicale = Radicale::start();
    radicale.create_book("shared").await;
    radicale
        .put_card(
            "shared",
            "a",
            &vcard("a", "Anna Muster", "Muster AG", &["044 123 45 67"]),
        )
        .await;
    radicale
        .put_card(
            "shared",
            "b",
            &vcard("b", "Beat Muster", "Muster AG", &["+41 44 123 45 67"]),
        )
        .await;
    radicale
        .put_card(
            "shared",
            "own",
            &vcard("own", "Muster AG Zentrale", "Muster AG", &["044 123 45 00"]),
        )
        .await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_carddav(scratch.path(), roomy_limits());
    let with = |id: &str, extra: Value| {
        let mut config = json!({ "url": radicale.book_url("shared"), "username": USER, "own_numbers": ["+41 44 123 45 00"] });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        carddav(id, config)
    };
    let all = rt
        .lookup_contact(&with("i-all", json!({})), "+41441234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.name, "Anna Muster / Beat Muster");
    assert_eq!(
        all.organisation.as_deref(),
        Some("Muster AG"),
        "the organisation they share"
    );
    let first = with(
        "i-first",
        json!({ "shared_number": "first", "contact_url": "https://cloud.example.com/contacts/{uid}" }),
    );
    let c = rt
        .lookup_contact(&first, "+41441234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.name, "Anna Muster");
    assert_eq!(
        c.deep_link.as_deref(),
        Some("https://cloud.example.com/contacts/a")
    );
    assert_eq!(
        name_of(
            &rt,
            &with("i-none", json!({ "shared_number": "none" })),
            "+41441234567"
        )
        .await,
        None
    );
    // The company's own number is never shown as a contact.
    assert_eq!(
        name_of(&rt, &with("i-own", json!({})), "+41441234500").await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_urls_are_permanent_errors_that_name_the_fix() {
    let radicale = Radicale::start();
    radicale.create_book("book").await;
    let scratch = tempfile::tempdir().unwrap();
    let rt = runtime_with_carddav(scratch.path(), roomy_limits());
    let mut wrong = (*carddav(
        "i-pw",
        json!({ "url": radicale.book_url("book"), "username": USER }),
    ))
    .clone();
    wrong
        .secrets
        .insert("password".into(), "not-the-password".into());
    let err = rt
        .lookup_contact(&Arc::new(wrong), "+41441234567")
        .await
        .unwrap_err();
    let InvokeError::Permanent(msg) = &err else {
        panic!("expected a permanent error, got {err:?}")
    };
    assert!(
        msg.contains("401 for user 'anna'") && msg.contains("check the username and the password"),
        "{msg}"
    );

    let missing = carddav(
        "i-404",
        json!({ "url": radicale.book_url("nope"), "username": USER }),
    );
    let err = rt
        .lookup_contact(&missing, "+41441234567")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no address book at"), "{err}");

    let issues = rt
        .validate_config("carddav", &json!({ "url": "dav.example.com/book" }))
        .await
        .unwrap();
    assert!(issues.iter().any(|i| i.field == "/url"), "{issues:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_shows_the_address_book_name_on_the_live_stream() {
    let radicale = Radicale::start();
    radicale.create_book("kontakte").await;
    radicale
        .put_card(
            "kontakte",
            "anna",
            &vcard("anna", "Anna Muster", "Muster AG", &["079 555 12 34"]),
        )
        .await;
    let h = Host::start("").await;
    let t = Tenant::create_for(
        &h,
        "Dav AG",
        &["044 123 45 67"],
        json!({
            "connector": "carddav",
            "config": { "url": radicale.book_url("kontakte"), "username": USER, "password": PASSWORD },
            "granted_hosts": ["127.0.0.1"],
        }),
    )
    .await;
    let mut sse = h.sse(&t.key).await;
    let v = h
        .op("POST", "/api/v1/sim/calls", Some(json!({ "to": "044 123 45 67", "from": "+41 79 555 12 34", "answer_after": 0.2, "hangup_after": 0.3 })))
        .await;
    let call = v["call_id"].as_str().unwrap().to_owned();
    let ringing = sse
        .next(Duration::from_secs(10))
        .await
        .expect("ringing on the SSE stream");
    assert_eq!(ringing["call_id"], call.as_str());
    assert_eq!(ringing["state"], "ringing");
    assert_eq!(
        ringing["contact"]["name"],
        "Anna Muster",
        "{ringing}\n{}",
        h.log()
    );
    assert_eq!(ringing["contact"]["organisation"], "Muster AG");
    assert_eq!(ringing["contact"]["source"], "carddav");
}
