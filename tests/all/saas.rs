//! The SaaS CRM connectors (HubSpot, Pipedrive, bexio, Zendesk) against
//! local servers that follow each vendor's published API: callers resolve
//! whatever format the app stores, answered and missed calls land on the
//! contact, own numbers and internal calls stay out, shared numbers follow
//! the configured rule, lookups are cached, a redelivery writes nothing
//! twice, 429 is retryable with the vendor's wait, rejected credentials are
//! a permanent error naming the field to fix.
//!
//! Every behaviour is one generic test run for each vendor (see
//! `per_vendor!` at the end); vendor-specific record details follow.

use std::sync::Arc;
use std::time::Duration;

use leansync_host::call::{CallEvent, CallState, Direction};
use leansync_host::number::E164;
use leansync_host::plugins::{Delivery, Installation, InvokeError, PluginRuntime};
use leansync_tests::db::{Backend, TestDb};
use leansync_tests::plugins::*;
use leansync_tests::saas::bexio::Bexio;
use leansync_tests::saas::hubspot::HubSpot;
use leansync_tests::saas::pipedrive::Pipedrive;
use leansync_tests::saas::zendesk::Zendesk;
use leansync_tests::saas::{Fake, Saas};
use serde_json::{Value, json};

/// A connector installed against its fake app.
struct Bench {
    fake: Fake,
    rt: PluginRuntime,
    inst: Arc<Installation>,
    _scratch: tempfile::TempDir,
}

impl Bench {
    /// `S`'s connector with its default test config plus `extra`, allowed
    /// to reach the fake on loopback (the shipped manifest only asks for
    /// the vendor's host, so the installed copy is widened, as an admin of
    /// a test system would).
    async fn start<S: Saas>(extra: Value) -> Self {
        let fake = Fake::start(S::default()).await;
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("plugins");
        let folder = install(S::PLUGIN, &dir);
        edit_manifest(&folder, "outbound-hosts", r#"["127.0.0.1:*"]"#);
        let rt = runtime(scratch.path(), limits());
        let report = rt.reload_dir(&dir);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let inst = installation_for::<S>(&fake, extra, &S::secrets());
        Self {
            fake,
            rt,
            inst,
            _scratch: scratch,
        }
    }

    /// Another host's runtime with the same connector folder (its own
    /// compile cache), for the same installation.
    fn another_host(&self) -> PluginRuntime {
        let rt = runtime(&self._scratch.path().join("other"), limits());
        let report = rt.reload_dir(&self._scratch.path().join("plugins"));
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        rt
    }

    async fn lookup(
        &self,
        number: &str,
    ) -> Result<Option<leansync_host::call::Contact>, InvokeError> {
        self.rt.lookup_contact(&self.inst, number).await
    }

    async fn deliver(&self, event: &CallEvent, key: &str) -> Result<(), InvokeError> {
        let delivery = Delivery {
            idempotency_key: key.into(),
            attempt: 1,
        };
        self.rt
            .on_call_event(&self.inst, event, None, &delivery)
            .await
    }
}

fn limits() -> leansync_host::config::PluginLimits {
    // A few HTTP round trips per call on a busy debug build.
    leansync_host::config::PluginLimits {
        call_timeout_ms: 10_000,
        ..test_limits()
    }
}

fn installation_for<S: Saas>(
    fake: &Fake,
    extra: Value,
    secrets: &[(&str, &str)],
) -> Arc<Installation> {
    let mut config = S::config(&fake.url());
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    let mut inst = (*installation(S::PLUGIN, config, &["127.0.0.1:*"])).clone();
    for (k, v) in secrets {
        inst.secrets.insert(k.to_string(), v.to_string());
    }
    Arc::new(inst)
}

/// A finished inbound call from `caller` to the licensed number:
/// `Some(secs)` answered with that talk time, `None` missed.
fn call_from(caller: &str, talk: Option<u32>) -> CallEvent {
    let mut e = ringing("call-1");
    e.caller = Some(E164::parse(caller).unwrap());
    e.state = if talk.is_some() {
        CallState::Ended
    } else {
        CallState::Missed
    };
    e.answered_at_ms = talk.map(|_| e.started_at_ms + 5_000);
    e.duration_secs = talk;
    e.ended_at_ms = Some(e.started_at_ms + 5_000 + u64::from(talk.unwrap_or(0)) * 1000);
    e
}

async fn lookup_finds_the_contact_whatever_format_the_app_stores<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    let anna = S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let beat = S::seed(&b.fake, "Beat", "Keller", "Keller GmbH", "+41 44 987 65 43");
    let carla = S::seed(&b.fake, "Carla", "Rossi", "Rossi SA", "0041315551212");
    for (number, id, name, org) in [
        ("+41791234567", &anna, "Anna Muster", "Muster AG"),
        ("+41449876543", &beat, "Beat Keller", "Keller GmbH"),
        ("+41315551212", &carla, "Carla Rossi", "Rossi SA"),
    ] {
        let c = b
            .lookup(number)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{}: {number} not found", S::PLUGIN));
        assert_eq!(c.name, name);
        assert_eq!(c.organisation.as_deref(), Some(org), "{}", S::PLUGIN);
        assert_eq!(c.source, S::PLUGIN);
        assert_eq!(c.deep_link, Some(S::deep_link(&b.fake, id)));
    }
    assert_eq!(b.lookup("+41325550000").await.unwrap(), None);
}

async fn a_burst_of_lookups_asks_the_app_once<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    assert!(b.lookup("+41791234567").await.unwrap().is_some());
    let after_first = b.fake.requests_to(S::SEARCH_PATH);
    assert!(after_first > 0);
    for _ in 0..5 {
        assert!(b.lookup("+41791234567").await.unwrap().is_some());
    }
    assert_eq!(b.fake.requests_to(S::SEARCH_PATH), after_first);
    // "Not found" is cached too.
    assert_eq!(b.lookup("+41325550000").await.unwrap(), None);
    let after_miss = b.fake.requests_to(S::SEARCH_PATH);
    assert_eq!(b.lookup("+41325550000").await.unwrap(), None);
    assert_eq!(b.fake.requests_to(S::SEARCH_PATH), after_miss);
}

async fn answered_and_missed_calls_are_journaled_on_the_contact<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    let anna = S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    b.deliver(&call_from("+41791234567", Some(185)), "k-answered")
        .await
        .unwrap();
    let mut missed = call_from("+41791234567", None);
    missed.call_id = "call-2".into();
    b.deliver(&missed, "k-missed").await.unwrap();
    // Ringing and answered events write nothing.
    let mut ringing_event = call_from("+41791234567", None);
    ringing_event.state = CallState::Ringing;
    b.deliver(&ringing_event, "k-ringing").await.unwrap();

    let journal = S::journal(&b.fake);
    assert_eq!(journal.len(), 2, "{journal:#?}");
    let (answered, missed) = (&journal[0], &journal[1]);
    assert_eq!(answered.contacts, vec![anna.clone()]);
    assert!(answered.answered, "{answered:#?}");
    assert!(
        answered
            .text
            .contains("Call from Anna Muster (+41791234567)"),
        "{}",
        answered.text
    );
    assert!(
        answered.text.contains("talk time 3:05"),
        "{}",
        answered.text
    );
    if let Some(secs) = answered.duration_secs {
        assert_eq!(secs, 185);
    }
    assert_eq!(missed.contacts, vec![anna]);
    assert!(!missed.answered, "{missed:#?}");
    assert!(
        missed.text.contains("Missed call from Anna Muster"),
        "{}",
        missed.text
    );
}

async fn an_outbound_call_is_logged_on_the_called_contact<S: Saas>() {
    // The licensed number is one of the company's own: its outbound calls
    // to customers are still external.
    let b = Bench::start::<S>(json!({ "own_numbers": ["044 123 45 67"] })).await;
    let anna = S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let mut event = call_from("+41441234567", Some(61));
    event.direction = Direction::Outbound;
    event.callee = E164::parse("079 123 45 67").unwrap();
    b.deliver(&event, "k-out").await.unwrap();
    let journal = S::journal(&b.fake);
    assert_eq!(journal.len(), 1, "{journal:#?}");
    assert_eq!(journal[0].contacts, vec![anna]);
    assert!(
        journal[0]
            .text
            .contains("Call to Anna Muster (+41791234567)"),
        "{}",
        journal[0].text
    );
    // A call to another own number is internal.
    event.callee = E164::parse("044 123 45 67").unwrap();
    b.deliver(&event, "k-own").await.unwrap();
    assert_eq!(S::journal(&b.fake).len(), 1);
}

async fn own_numbers_and_internal_calls_stay_out<S: Saas>() {
    let config = json!({ "own_numbers": ["044 123 45 99"] });
    let b = Bench::start::<S>(config).await;
    // The company itself is in the app, as it often is.
    S::seed(&b.fake, "Acme", "Reception", "Acme AG", "044 123 45 99");
    assert_eq!(b.lookup("+41441234599").await.unwrap(), None);
    b.deliver(&call_from("+41441234599", Some(30)), "k-own")
        .await
        .unwrap();
    let mut internal = call_from("+41791234567", Some(30));
    internal.direction = Direction::Internal;
    b.deliver(&internal, "k-internal").await.unwrap();
    assert!(S::journal(&b.fake).is_empty());

    let logging = Bench::start::<S>(json!({ "log_internal_calls": true })).await;
    logging.deliver(&internal, "k-internal").await.unwrap();
    assert_eq!(S::journal(&logging.fake).len(), 1);
}

async fn a_shared_number_follows_the_configured_rule<S: Saas>() {
    for (rule, expected) in [("all", 2), ("first", 1), ("none", 0)] {
        let b = Bench::start::<S>(json!({ "shared_number": rule })).await;
        let first = S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
        let second = S::seed(&b.fake, "Max", "Muster", "Muster AG", "+41791234567");
        b.deliver(&call_from("+41791234567", None), "k")
            .await
            .unwrap();
        let journal = S::journal(&b.fake);
        assert_eq!(
            journal.len(),
            expected,
            "{} rule {rule}: {journal:#?}",
            S::PLUGIN
        );
        let linked: Vec<String> = journal.iter().flat_map(|j| j.contacts.clone()).collect();
        match rule {
            "all" => assert_eq!(linked, vec![first, second]),
            "first" => assert_eq!(linked, vec![first]),
            _ => assert!(linked.is_empty()),
        }
    }
}

async fn an_unknown_caller_is_logged_or_created_once<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    b.deliver(&call_from("+41795550101", None), "k")
        .await
        .unwrap();
    let journal = S::journal(&b.fake);
    assert_eq!(journal.len(), 1);
    assert!(journal[0].contacts.is_empty());
    assert!(journal[0].text.contains("Missed call from +41795550101"));
    assert!(S::created_contacts(&b.fake).is_empty());

    let b = Bench::start::<S>(json!({ "create_unknown_caller": true })).await;
    let event = call_from("+41795550101", None);
    b.deliver(&event, "k").await.unwrap();
    b.deliver(&event, "k").await.unwrap();
    let created = S::created_contacts(&b.fake);
    assert_eq!(created.len(), 1, "{created:#?}");
    assert!(created[0].to_string().contains("+41795550101"));
    let journal = S::journal(&b.fake);
    assert_eq!(journal.len(), 1, "{journal:#?}");
    assert_eq!(journal[0].contacts.len(), 1);
    // The next call from that number finds the new contact.
    assert!(b.lookup("+41795550101").await.unwrap().is_some());
}

async fn a_redelivery_does_not_duplicate_the_record<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let event = call_from("+41791234567", Some(42));
    b.deliver(&event, "k-1").await.unwrap();
    b.deliver(&event, "k-1").await.unwrap();
    assert_eq!(S::journal(&b.fake).len(), 1);
    // Another delivery (another event) is a new record.
    b.deliver(&event, "k-2").await.unwrap();
    assert_eq!(S::journal(&b.fake).len(), 2);
}

async fn a_rate_limit_is_retryable_with_the_wait_the_app_asked_for<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    S::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    b.fake.throttle(1, 7);
    let err = b.lookup("+41791234567").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err:?}");
    assert!(err.to_string().contains("HTTP 429"), "{err}");

    b.fake.throttle(1, 3);
    let event = call_from("+41791234567", Some(42));
    let err = b.deliver(&event, "k").await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err:?}");
    assert!(S::journal(&b.fake).is_empty());
    // The host's retry goes through.
    b.deliver(&event, "k").await.unwrap();
    assert_eq!(S::journal(&b.fake).len(), 1);
}

async fn rejected_credentials_are_a_permanent_error_naming_the_field<S: Saas>() {
    let mut b = Bench::start::<S>(json!({})).await;
    let wrong: Vec<(&str, &str)> = S::secrets().iter().map(|(k, _)| (*k, "wrong")).collect();
    b.inst = installation_for::<S>(&b.fake, json!({}), &wrong);
    for err in [
        b.lookup("+41791234567").await.unwrap_err(),
        b.deliver(&call_from("+41791234567", None), "k")
            .await
            .unwrap_err(),
    ] {
        let InvokeError::Permanent(msg) = &err else {
            panic!("expected a permanent error, got {err:?}");
        };
        assert!(msg.contains("rejected the credentials (HTTP 401"), "{msg}");
        assert!(msg.contains(&format!("`{}`", S::CREDENTIAL_FIELD)), "{msg}");
    }
    // A missing secret says which one to set, without asking the app.
    let before = b.fake.data().requests.len();
    b.inst = installation_for::<S>(&b.fake, json!({}), &[]);
    let err = b.lookup("+41791234567").await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("the secret `{}` is not set", S::CREDENTIAL_FIELD)),
        "{err}"
    );
    assert_eq!(b.fake.data().requests.len(), before);
}

async fn the_shipped_manifest_reaches_only_the_vendor_api<S: Saas>() {
    let fake = Fake::start(S::default()).await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    install(S::PLUGIN, &dir);
    let rt = runtime(scratch.path(), limits());
    assert!(rt.reload_dir(&dir).failed.is_empty());
    let inst = installation_for::<S>(&fake, json!({}), &S::secrets());
    let err = rt.lookup_contact(&inst, "+41791234567").await.unwrap_err();
    let InvokeError::Permanent(msg) = &err else {
        panic!("expected a permanent error, got {err:?}");
    };
    assert!(msg.contains("does not ask for it"), "{msg}");
    assert!(fake.data().requests.is_empty());
    let hosts: Vec<String> = rt
        .get(S::PLUGIN)
        .unwrap()
        .manifest
        .capabilities
        .outbound_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    assert_eq!(hosts, vec![S::API_HOST.to_string()]);
}

async fn the_config_is_checked_field_by_field<S: Saas>() {
    let b = Bench::start::<S>(json!({})).await;
    let mut good = S::config("https://example.invalid");
    for (k, v) in S::secrets() {
        good[k] = json!(v);
    }
    let issues = b.rt.validate_config(S::PLUGIN, &good).await.unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(key);
        } else {
            c[key] = value;
        }
        c
    };
    for (config, field, says) in [
        (
            with("own_numbers", json!(["221"])),
            "/own_numbers/0",
            "too short",
        ),
        (
            with("shared_number", json!("some")),
            "/shared_number",
            "some",
        ),
        (
            with("base_url", json!("http://api.example.com")),
            "/base_url",
            "https://",
        ),
        (
            with("default_country", json!("XX")),
            "",
            "not a known default country",
        ),
        (
            with(S::CREDENTIAL_FIELD, Value::Null),
            "",
            S::CREDENTIAL_FIELD,
        ),
    ] {
        let issues = b.rt.validate_config(S::PLUGIN, &config).await.unwrap();
        assert!(
            issues
                .iter()
                .any(|i| i.field == field && i.message.contains(says)),
            "{}: expected {field} saying {says}, got {issues:?}",
            S::PLUGIN
        );
    }
}

/// Runs each generic test above once per vendor, as
/// `saas::<vendor>::<behaviour>`.
macro_rules! per_vendor {
    ([$($vendor:ident: $ty:ty),* $(,)?] $tests:tt) => {
        $( vendor_tests!($vendor, $ty, $tests); )*
    };
}

macro_rules! vendor_tests {
    ($vendor:ident, $ty:ty, [$($test:ident),* $(,)?]) => {
        mod $vendor {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test::<$ty>().await
                }
            )*
        }
    };
}

per_vendor!(
    [hubspot: super::HubSpot, pipedrive: super::Pipedrive, bexio: super::Bexio, zendesk: super::Zendesk]
    [
        lookup_finds_the_contact_whatever_format_the_app_stores,
        a_burst_of_lookups_asks_the_app_once,
        answered_and_missed_calls_are_journaled_on_the_contact,
        an_outbound_call_is_logged_on_the_called_contact,
        own_numbers_and_internal_calls_stay_out,
        a_shared_number_follows_the_configured_rule,
        an_unknown_caller_is_logged_or_created_once,
        a_redelivery_does_not_duplicate_the_record,
        a_rate_limit_is_retryable_with_the_wait_the_app_asked_for,
        rejected_credentials_are_a_permanent_error_naming_the_field,
        the_shipped_manifest_reaches_only_the_vendor_api,
        the_config_is_checked_field_by_field,
    ]
);

/// The connectors' state (lookup cache, "already journaled" markers) lives
/// in the database: a host that did not make it honours it, so a delivery
/// another host finishes after a crash writes nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_on_one_database_share_the_lookup_cache_and_the_journal_markers() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = Bench::start::<HubSpot>(json!({})).await;
    a.rt.set_services(DatabaseState::open(&db.url).await);
    let b = a.another_host();
    b.set_services(DatabaseState::open(&db.url).await);
    HubSpot::seed(&a.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");

    assert!(a.lookup("+41791234567").await.unwrap().is_some());
    let searches = a.fake.requests_to(HubSpot::SEARCH_PATH);
    assert!(searches > 0);
    let on_b = b.lookup_contact(&a.inst, "+41791234567").await.unwrap();
    assert_eq!(on_b.map(|c| c.name).as_deref(), Some("Anna Muster"));
    assert_eq!(
        a.fake.requests_to(HubSpot::SEARCH_PATH),
        searches,
        "host b asked the app again instead of using the cache host a filled"
    );

    let event = call_from("+41791234567", Some(42));
    a.deliver(&event, "k-crash").await.unwrap();
    let delivery = Delivery {
        idempotency_key: "k-crash".into(),
        attempt: 2,
    };
    b.on_call_event(&a.inst, &event, None, &delivery)
        .await
        .unwrap();
    assert_eq!(
        HubSpot::journal(&a.fake).len(),
        1,
        "the redelivery through host b journaled the call twice"
    );
    drop((a, b));
    db.drop_db().await;
}

// ---- what each vendor's record looks like ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_logs_a_call_engagement_associated_with_the_contact() {
    let b = Bench::start::<HubSpot>(json!({})).await;
    let anna = HubSpot::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let event = call_from("+41791234567", Some(185));
    b.deliver(&event, "k").await.unwrap();
    let call = &HubSpot::journal(&b.fake)[0].raw;
    let p = &call["properties"];
    assert_eq!(p["hs_call_status"], "COMPLETED");
    assert_eq!(p["hs_call_direction"], "INBOUND");
    assert_eq!(p["hs_call_duration"], "185000");
    assert_eq!(p["hs_call_from_number"], "+41791234567");
    assert_eq!(p["hs_call_to_number"], "+41441234567");
    let ts = p["hs_timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    assert_eq!(call["associations"][0]["to"]["id"], json!(anna));
    assert_eq!(
        call["associations"][0]["types"][0]["associationTypeId"],
        194
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipedrive_logs_a_call_log_with_outcome_and_times() {
    let b = Bench::start::<Pipedrive>(json!({})).await;
    let anna = Pipedrive::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let event = call_from("+41791234567", None);
    b.deliver(&event, "k").await.unwrap();
    let log = &Pipedrive::journal(&b.fake)[0].raw;
    assert_eq!(log["outcome"], "no_answer");
    assert_eq!(log["person_id"], json!(anna.parse::<u64>().unwrap()));
    assert_eq!(log["to_phone_number"], "+41441234567");
    assert_eq!(log["from_phone_number"], "+41791234567");
    let start = log["start_time"].as_str().unwrap();
    assert_eq!(start.len(), 19, "{start}");
    // The token travels in the header, never in a URL.
    assert!(
        b.fake
            .data()
            .requests
            .iter()
            .all(|r| !r.contains("api_token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bexio_writes_a_note_on_the_contact_in_swiss_time() {
    let b = Bench::start::<Bexio>(json!({})).await;
    let anna = Bexio::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let mut event = call_from("+41791234567", Some(60));
    event.started_at_ms = 1_764_109_086_500; // 2025-11-25 22:18:06 UTC
    b.deliver(&event, "k").await.unwrap();
    let note = &Bexio::journal(&b.fake)[0].raw;
    assert_eq!(note["contact_id"], json!(anna.parse::<u64>().unwrap()));
    assert_eq!(note["user_id"], 1);
    assert_eq!(note["event_start"], "2025-11-25 23:18:06");
    assert_eq!(note["subject"], "Call from Anna Muster (+41791234567)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_shows_the_caller_to_the_agent_and_tickets_missed_calls() {
    let b = Bench::start::<Zendesk>(json!({ "display_agent_id": 900 })).await;
    let anna = Zendesk::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let mut ringing_event = call_from("+41791234567", None);
    ringing_event.state = CallState::Ringing;
    b.deliver(&ringing_event, "k-ringing").await.unwrap();
    let displays = b.fake.data().created("displays");
    assert_eq!(
        displays,
        vec![json!({ "agent_id": 900, "user_id": anna.parse::<u64>().unwrap() })]
    );

    b.deliver(&call_from("+41791234567", None), "k-missed")
        .await
        .unwrap();
    let ticket = &Zendesk::journal(&b.fake)[0].raw;
    assert_eq!(ticket["requester_id"], json!(anna.parse::<u64>().unwrap()));
    assert_eq!(
        ticket["status"], "new",
        "a missed call stays open for a call back"
    );
    assert_eq!(ticket["comment"]["public"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_deduplicates_on_its_side_when_the_connector_state_is_lost() {
    let b = Bench::start::<Zendesk>(json!({})).await;
    Zendesk::seed(&b.fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let event = call_from("+41791234567", Some(42));
    b.deliver(&event, "k").await.unwrap();
    // A fresh runtime has an empty key-value store: only Zendesk's
    // Idempotency-Key stops the second ticket.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("plugins");
    let folder = install("zendesk", &dir);
    edit_manifest(&folder, "outbound-hosts", r#"["127.0.0.1:*"]"#);
    let rt = runtime(scratch.path(), limits());
    assert!(rt.reload_dir(&dir).failed.is_empty());
    let delivery = Delivery {
        idempotency_key: "k".into(),
        attempt: 2,
    };
    rt.on_call_event(&b.inst, &event, None, &delivery)
        .await
        .unwrap();
    assert_eq!(Zendesk::journal(&b.fake).len(), 1);
}

// ---- through the running host ----------------------------------------------

/// A missed call on a licensed number reaches HubSpot through the real
/// `leansync` binary with nobody's app open: the host resolves the caller
/// with the connector's lookup (the webhook installation of the same
/// number sees the contact) and delivers the `missed` event, which the
/// connector journals on the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_reaches_hubspot_through_the_running_host() {
    use leansync_tests::host::{Host, Tenant, eventually};
    use leansync_tests::receiver::Receiver;

    let fake = Fake::start(HubSpot).await;
    let anna = HubSpot::seed(&fake, "Anna", "Muster", "Muster AG", "079 123 45 67");
    let plugins = tempfile::tempdir().unwrap();
    install("webhook", plugins.path());
    let folder = install("hubspot", plugins.path());
    edit_manifest(&folder, "outbound-hosts", r#"["127.0.0.1:*"]"#);
    let dir = plugins.path().to_str().unwrap();
    let h = Host::start_with("", &[("LEANSYNC_PLUGINS_DIR", dir)]).await;
    let receiver = Receiver::start().await;
    let t = Tenant::create(&h, "Muster Treuhand", &["044 123 45 67"], &receiver.url()).await;

    // The same number also licensed for HubSpot.
    let mut config = HubSpot::config(&fake.url());
    config["access_token"] = json!(leansync_tests::saas::hubspot::TOKEN);
    let body = json!({ "connector": "hubspot", "config": config, "granted_hosts": ["127.0.0.1"] });
    let path = format!("/api/v1/customers/{}/installations", t.customer);
    let inst = h.ok(&t.admin, "POST", &path, Some(body)).await;
    let path = format!(
        "/api/v1/installations/{}/licenses",
        inst["id"].as_str().unwrap()
    );
    let licenses = h
        .ok(&t.admin, "POST", &path, Some(json!({ "count": 1 })))
        .await;
    let license = licenses[0]["id"].as_str().unwrap();
    h.op(
        "POST",
        &format!("/api/v1/licenses/{license}/provision"),
        None,
    )
    .await;
    let number = json!({ "number": "044 123 45 67" });
    let path = format!("/api/v1/licenses/{license}/assign");
    h.ok(&t.admin, "POST", &path, Some(number)).await;

    let call = json!({ "to": "044 123 45 67", "from": "079 123 45 67", "answer_after": 0.2, "hangup_after": 0.3, "missed": true });
    h.op("POST", "/api/v1/sim/calls", Some(call)).await;

    let logged = eventually(Duration::from_secs(30), || {
        HubSpot::journal(&fake).into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("no call logged in HubSpot:\n{}", h.log()));
    assert_eq!(logged.contacts, vec![anna]);
    assert!(!logged.answered);
    assert!(
        logged
            .text
            .contains("Missed call from Anna Muster (+41791234567)")
    );
    let popped = eventually(Duration::from_secs(10), || {
        receiver.received().into_iter().find(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            body["event"]["contact"]["source"] == "hubspot"
        })
    })
    .await;
    let popped: Value =
        serde_json::from_slice(&popped.expect("no event with the HubSpot contact").body).unwrap();
    assert_eq!(popped["event"]["contact"]["name"], "Anna Muster");
    assert_eq!(popped["event"]["contact"]["organisation"], "Muster AG");
}
