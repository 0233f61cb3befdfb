//! What the SaaS CRM connectors share. A connector describes its vendor's
//! API as an [`App`] (search contacts by phone, create a contact, log a
//! call); [`Crm`] turns that into a LeanSync connector with the behaviour
//! users of such integrations ask for most:
//!
//! - numbers match whatever format the app stores (E.164 comparison after
//!   a search with the usual spellings),
//! - the company's own numbers never resolve to "the customer",
//! - missed and answered calls are journaled from the host's events, so
//!   nobody needs the app open,
//! - several contacts on one number: log to all, the first, or none,
//! - internal calls stay out of the journal unless asked for,
//! - lookups are cached per installation with a short TTL,
//! - a redelivered event does not create a second record.

#[cfg(target_family = "wasm")]
pub mod api;
pub mod time;

use std::marker::PhantomData;

use leansync_plugin_api::cache::LookupCache;
use leansync_plugin_api::phone::{self, E164};
use leansync_plugin_api::policy::CallPolicy;
use leansync_plugin_api::{
    CallEvent, CallState, ConfigIssue, Connector, ConnectorError, Contact, Delivery, Direction, kv,
    log, permanent,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(target_family = "wasm")]
pub use api::Api;

/// A contact found in the app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The app's id of the record.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Company, if the app knows one.
    pub organisation: Option<String>,
    /// Opens the record in the app's web UI.
    pub deep_link: Option<String>,
    /// The phone numbers as the app stores them.
    pub phones: Vec<String>,
}

/// Config options every SaaS connector offers (flattened into its config):
/// the SDK's call policy (`default_country`, `shared_number`,
/// `log_internal_calls`, `own_numbers`) and the two below.
#[derive(Debug, Clone, Deserialize)]
pub struct Options {
    /// Own numbers, internal calls, shared numbers.
    #[serde(flatten)]
    pub policy: CallPolicy,
    /// Create a contact for a caller the app does not know yet.
    #[serde(default)]
    pub create_unknown_caller: bool,
    /// How long a found contact is reused before asking the app again.
    #[serde(default = "Options::default_cache_secs")]
    pub lookup_cache_secs: u32,
}

/// "Not found" is reused for at most this long: a contact just typed into
/// the app should show up on the next call soon.
const NOT_FOUND_CACHE_SECS: u32 = 30;

impl Options {
    fn default_cache_secs() -> u32 {
        60
    }

    fn cache(&self) -> LookupCache {
        LookupCache::new(
            "lookup",
            self.lookup_cache_secs,
            self.lookup_cache_secs.min(NOT_FOUND_CACHE_SECS),
        )
    }
}

/// One finished call to journal.
#[derive(Debug, Clone)]
pub struct Call {
    /// The host's call id.
    pub call_id: String,
    /// Seen from the licensed number.
    pub direction: Direction,
    /// Answered (`ended`) or not (`missed`).
    pub answered: bool,
    /// Talk time.
    pub duration_secs: u32,
    /// When it started ringing (Unix ms).
    pub started_at_ms: u64,
    /// When it ended or stopped ringing (Unix ms).
    pub ended_at_ms: u64,
    /// Calling number (E.164), `None` when withheld.
    pub from: Option<String>,
    /// Called number (E.164).
    pub to: String,
    /// The customer's side of the call, `None` when withheld.
    pub other: Option<String>,
}

impl Call {
    fn new(event: &CallEvent) -> Self {
        let other = other_party(event);
        Self {
            call_id: event.call_id.clone(),
            direction: event.direction,
            answered: event.state == CallState::Ended,
            duration_secs: event.duration_secs.unwrap_or(0),
            started_at_ms: event.started_at_ms,
            ended_at_ms: event.ended_at_ms.unwrap_or(
                event.started_at_ms + u64::from(event.duration_secs.unwrap_or(0)) * 1000,
            ),
            from: event.caller.clone(),
            to: event.callee.clone(),
            other,
        }
    }

    /// Whether the customer called us (internal calls count as inbound).
    pub fn inbound(&self) -> bool {
        self.direction != Direction::Outbound
    }

    /// Talk time in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        u64::from(self.duration_secs) * 1000
    }

    /// A one-line title, e.g. "Missed call from Anna Muster (+41791234567)".
    pub fn title(&self, contact: Option<&Match>) -> String {
        let number = self.other.as_deref().unwrap_or("a withheld number");
        let who = match contact {
            Some(c) if c.name != number => format!("{} ({number})", c.name),
            _ => number.to_string(),
        };
        match (self.inbound(), self.answered) {
            (true, true) => format!("Call from {who}"),
            (true, false) => format!("Missed call from {who}"),
            (false, true) => format!("Call to {who}"),
            (false, false) => format!("Unanswered call to {who}"),
        }
    }

    /// A few lines for the record's body.
    pub fn summary(&self) -> String {
        let way = match self.direction {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
            Direction::Internal => "Internal",
        };
        let outcome = if self.answered {
            format!(
                "answered, talk time {}",
                leansync_plugin_api::time::duration(self.duration_secs)
            )
        } else {
            "not answered".to_string()
        };
        format!(
            "{way} call from {} to {}, {outcome}.\nStarted {} (Swiss time).\nLogged by LeanSync Voice, call {}.",
            self.from.as_deref().unwrap_or("a withheld number"),
            self.to,
            time::sql_zurich(self.started_at_ms),
            self.call_id
        )
    }
}

/// A vendor's API as a connector needs it.
pub trait App: Sized {
    /// Source name shown with resolved contacts, e.g. "hubspot".
    const SOURCE: &'static str;
    /// Whether [`App::show`] does something (looked up on `ringing`).
    const SHOWS_RINGING: bool = false;

    /// Reads the installation's config and secrets.
    fn connect() -> Result<(Self, Options), ConnectorError>;

    /// Vendor-specific config checks beyond the JSON schema.
    fn check_config(_config: &Value) -> Vec<ConfigIssue> {
        Vec::new()
    }

    /// Contacts whose phone fields may hold `number` (E.164); `variants`
    /// are its usual spellings. Candidates are checked afterwards, so a
    /// fuzzy search is fine.
    fn search(&self, number: &str, variants: &[String]) -> Result<Vec<Match>, ConnectorError>;

    /// Creates a contact for an unknown number.
    fn create_contact(&self, number: &str) -> Result<Match, ConnectorError>;

    /// Writes one journal record of `call`, linked to `contact` if given.
    /// `key` is stable across redeliveries of this record.
    fn log_call(
        &self,
        call: &Call,
        contact: Option<&Match>,
        key: &str,
    ) -> Result<(), ConnectorError>;

    /// Brings the caller's record up while the phone rings.
    fn show(&self, _contact: &Match) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// The connector of an [`App`]: `export!(crm::Crm<MyApp>)`.
pub struct Crm<A>(PhantomData<A>);

/// How long the marker of a written journal record is kept: longer than
/// the host retries and an admin would re-drive a dead letter.
const WRITTEN_TTL_SECS: u32 = 30 * 24 * 3600;

impl<A: App> Connector for Crm<A> {
    fn validate_config(config: Value) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = check_options(&config);
        issues.extend(A::check_config(&config));
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    fn lookup_contact(number: String) -> Result<Option<Contact>, ConnectorError> {
        let (app, options) = A::connect()?;
        let found = find(&app, &options, &number)?;
        Ok(found.into_iter().next().map(|m| Contact {
            name: m.name,
            organisation: m.organisation,
            deep_link: m.deep_link,
            source: A::SOURCE.to_string(),
        }))
    }

    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        let journal = matches!(event.state, CallState::Ended | CallState::Missed);
        let ringing = event.state == CallState::Ringing && A::SHOWS_RINGING;
        if !journal && !ringing {
            return Ok(());
        }
        let (app, options) = A::connect()?;
        let call = Call::new(&event);
        if is_internal(&event, &call, &options.policy) && !options.policy.log_internal_calls {
            log::debug(&format!("call {} is internal: not journaled", call.call_id));
            return Ok(());
        }
        let found = match &call.other {
            Some(number) => find(&app, &options, number)?,
            None => Vec::new(),
        };
        if ringing {
            return match found.first() {
                Some(contact) => app.show(contact),
                None => Ok(()),
            };
        }
        for contact in targets(&app, &options, &call, found, &delivery.idempotency_key)? {
            let key = match &contact {
                Some(c) => format!("{}:{}", delivery.idempotency_key, c.id),
                None => delivery.idempotency_key.clone(),
            };
            let marker = format!("written:{key}");
            if kv::get(&marker).is_some() {
                log::info(&format!(
                    "{key} was already journaled: skipping the redelivery"
                ));
                continue;
            }
            app.log_call(&call, contact.as_ref(), &key)?;
            if let Err(e) = kv::set(&marker, b"1", Some(WRITTEN_TTL_SECS)) {
                log::warn(&format!("cannot remember that {key} was journaled: {e}"));
            }
        }
        Ok(())
    }
}

/// The contacts a call is logged on, one `None` for "no contact".
fn targets<A: App>(
    app: &A,
    options: &Options,
    call: &Call,
    found: Vec<Match>,
    idempotency_key: &str,
) -> Result<Vec<Option<Match>>, ConnectorError> {
    Ok(match found.len() {
        0 => match &call.other {
            Some(number) if options.create_unknown_caller => {
                vec![Some(create_once(app, options, number, idempotency_key)?)]
            }
            _ => vec![None],
        },
        // `shared_number = "none"` leaves an ambiguous number unjournaled.
        _ => options.policy.pick(found).into_iter().map(Some).collect(),
    })
}

/// Creates the unknown caller's contact once per delivery, even when the
/// journal write after it fails and the event is redelivered.
fn create_once<A: App>(
    app: &A,
    options: &Options,
    number: &str,
    idempotency_key: &str,
) -> Result<Match, ConnectorError> {
    let marker = format!("created:{idempotency_key}");
    if let Some(m) = kv::get(&marker).and_then(|b| serde_json::from_slice(&b).ok()) {
        return Ok(m);
    }
    let created = app.create_contact(number)?;
    let bytes = serde_json::to_vec(&created).unwrap_or_default();
    if let Err(e) = kv::set(&marker, &bytes, Some(WRITTEN_TTL_SECS)) {
        log::warn(&format!(
            "cannot remember the contact created for {number}: {e}"
        ));
    }
    // The cached "not found" is stale now.
    options.cache().put(number, Some(&vec![created.clone()]));
    Ok(created)
}

/// The app's contacts with exactly this number, through the lookup cache.
/// The company's own numbers and extensions resolve to nobody.
fn find<A: App>(app: &A, options: &Options, number: &str) -> Result<Vec<Match>, ConnectorError> {
    let policy = &options.policy;
    let Some(wanted) = policy.resolvable(number) else {
        return Ok(Vec::new());
    };
    let cached = options.cache().get_or_fetch(&wanted.to_string(), || {
        let variants = phone::search_variants(&wanted);
        let mut found: Vec<Match> = Vec::new();
        for m in app.search(&wanted.to_string(), &variants)? {
            let same = m
                .phones
                .iter()
                .any(|p| E164::parse(p, &policy.default_country).is_ok_and(|n| n == wanted));
            if same && !found.iter().any(|seen| seen.id == m.id) {
                found.push(m);
            }
        }
        // Several searches merge in request order; the apps' ids grow with
        // time, so sorting by id makes "first" the oldest contact.
        let ids: Option<Vec<u64>> = found.iter().map(|m| m.id.parse().ok()).collect();
        if ids.is_some() {
            found.sort_by_key(|m| m.id.parse::<u64>().unwrap_or_default());
        }
        Ok::<_, ConnectorError>((!found.is_empty()).then_some(found))
    })?;
    Ok(cached.unwrap_or_default())
}

/// The customer's side of the call.
fn other_party(event: &CallEvent) -> Option<String> {
    match event.direction {
        Direction::Outbound => Some(event.callee.clone()),
        Direction::Inbound => event.caller.clone(),
        Direction::Internal => {
            if event.caller.as_deref() == Some(event.licensed_number.as_str()) {
                Some(event.callee.clone())
            } else {
                event.caller.clone()
            }
        }
    }
}

/// Whether the call stays between the company's own numbers. The SDK's
/// rule looks at the caller, which for an outbound call is the licensed
/// number itself (often listed as an own number): there the called party
/// decides.
fn is_internal(event: &CallEvent, call: &Call, policy: &CallPolicy) -> bool {
    match event.direction {
        Direction::Internal => true,
        Direction::Outbound => call
            .other
            .as_deref()
            .is_some_and(|other| policy.is_own_number(other)),
        Direction::Inbound => policy.is_internal(event),
    }
}

fn check_options(config: &Value) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if let Some(url) = config.get("base_url").and_then(Value::as_str) {
        let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| url.starts_with(p));
        if !url.starts_with("https://") && !local {
            issues.push(ConfigIssue {
                field: "/base_url".into(),
                message: format!(
                    "'{url}' is not an https:// URL; enter the API's address, e.g. the default shown in the form"
                ),
            });
        }
    }
    match serde_json::from_value::<CallPolicy>(config.clone()) {
        Err(e) => issues.push(ConfigIssue {
            field: String::new(),
            message: format!("call options: {e}"),
        }),
        Ok(policy) => {
            for (i, own) in policy.own_numbers.iter().enumerate() {
                if let Err(e) = E164::parse(own, &policy.default_country) {
                    issues.push(ConfigIssue {
                        field: format!("/own_numbers/{i}"),
                        message: format!(
                            "{e}; write each own number in full, e.g. +41441234567 or 044 123 45 67"
                        ),
                    });
                }
            }
        }
    }
    issues
}

/// The fewest search terms that find every spelling in `variants` in an
/// app whose search matches substrings: a term that contains another
/// finds nothing more.
pub fn substring_terms(variants: &[String]) -> Vec<String> {
    variants
        .iter()
        .filter(|v| {
            !variants
                .iter()
                .any(|other| other != *v && v.contains(other.as_str()))
        })
        .fold(Vec::new(), |mut terms, v| {
            if !terms.contains(v) {
                terms.push(v.clone());
            }
            terms
        })
}

/// Reads a secret config field, or explains which field to set.
pub fn secret(field: &str, help: &str) -> Result<String, ConnectorError> {
    leansync_plugin_api::secret(field)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| permanent(format!("the secret `{field}` is not set; {help}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_terms_cover_every_spelling_with_few_requests() {
        let number = E164::parse("+41791234567", &Default::default()).unwrap();
        let variants = phone::search_variants(&number);
        let terms = substring_terms(&variants);
        assert_eq!(terms, ["791234567", "079 123 45 67", "+41 79 123 45 67"]);
        for v in &variants {
            assert!(
                terms.iter().any(|t| v.contains(t.as_str())),
                "{v} not covered"
            );
        }
    }
}
