//! Declarative connector tests, one TOML file per case in a plugin's
//! `tests/` folder, run by `leansync plugin test`: an input (a call event or
//! a number to look up), the installation's config, the fake business app's
//! responses, and what must come out (result, requests, log, state).
//!
//! ```toml
//! export = "on-call-event"                  # or "lookup-contact", "validate-config"
//! event = { state = "missed", from = "+4930123456", to = "+4989123456" }
//! config = { base_url = "https://api.example.com" }
//! secrets = { api_token = "test-token" }
//!
//! [[responses]]                             # the fake app
//! method = "POST"
//! path = "/calls"
//! status = 201
//!
//! [expect]
//! result = "ok"
//! [[expect.requests]]
//! method = "POST"
//! path = "/calls"
//! headers = { authorization = "Bearer test-token" }
//! json = { state = "missed", number = "+4930123456" }
//! ```
//!
//! Every request the connector makes must be listed under
//! `expect.requests`, in order (set `expect.other-requests = true` to allow
//! more). Grants default to the manifest's `outbound-hosts`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EventFile, FakeRoute, Harness, Input, Outcome, Setup, Verdict};
use crate::call::{CallState, Direction};

/// One case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Case {
    /// What the case shows (printed on failure).
    #[serde(default)]
    pub description: String,
    /// Which export to run.
    #[serde(default = "default_export")]
    pub export: String,
    /// The call event for `on-call-event`.
    pub event: Option<CaseEvent>,
    /// The number for `lookup-contact`.
    pub number: Option<String>,
    /// The installation's config.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Its secret fields.
    #[serde(default)]
    pub secrets: HashMap<String, String>,
    /// Hosts granted; by default those the manifest asks for.
    pub grants: Option<Vec<String>>,
    /// Key-value state before the call.
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
    /// The fake business app.
    #[serde(default)]
    pub responses: Vec<FakeRoute>,
    /// What must come out.
    #[serde(default)]
    pub expect: Expect,
}

fn default_export() -> String {
    "on-call-event".into()
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A call event in a case: the `plugin event` options, or every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaseEvent {
    /// `ringing`, `answered`, `ended` or `missed`.
    pub state: CallState,
    /// Calling number; absent for a withheld number.
    pub from: Option<String>,
    /// Called number.
    pub to: String,
    /// `inbound` (default), `outbound` or `internal`.
    #[serde(default = "inbound")]
    pub direction: Direction,
    /// Talk time for `ended`.
    pub duration: Option<u32>,
    /// Call id (default: generated).
    pub call_id: Option<String>,
    /// Who picked up (connector API 1.1.0; answered and ended events).
    pub answered_by: Option<String>,
}

fn inbound() -> Direction {
    Direction::Inbound
}

/// What a case expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expect {
    /// `ok`, `retryable`, `permanent` or `fault`.
    #[serde(default = "ok")]
    pub result: String,
    /// Text the error message must contain.
    pub message_contains: Option<String>,
    /// For `lookup-contact`: fields the contact must have; `false` for none.
    pub contact: Option<toml::Value>,
    /// The requests the connector must make, in order.
    #[serde(default)]
    pub requests: Vec<ExpectedRequest>,
    /// Whether requests beyond those listed are allowed.
    #[serde(default)]
    pub other_requests: bool,
    /// Text each of which some log line must contain.
    #[serde(default)]
    pub log_contains: Vec<String>,
    /// Key-value entries that must hold after the call.
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            result: ok(),
            message_contains: None,
            contact: None,
            requests: Vec::new(),
            other_requests: false,
            log_contains: Vec::new(),
            kv: BTreeMap::new(),
        }
    }
}

fn ok() -> String {
    "ok".into()
}

/// A request the connector must make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExpectedRequest {
    /// Its method.
    pub method: String,
    /// Its path (with a `?`, the query too).
    pub path: String,
    /// Headers it must carry (names case-insensitive, values exact).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Fields its JSON body must have (a subset match).
    pub json: Option<toml::Value>,
    /// Text its body must contain.
    pub body_contains: Option<String>,
}

/// Reads a case file; the error names the file and what is wrong.
pub fn load(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "{}: {}",
            path.display(),
            e.to_string().trim_end().replace('\n', " ")
        )
    })
}

/// The case files of a plugin folder (`tests/*.toml`), sorted.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let tests = dir.join("tests");
    let rd = std::fs::read_dir(&tests).map_err(|e| {
        format!(
            "{}: {e}; put one TOML file per case there (`leansync plugin new` writes examples)",
            tests.display()
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The setup and input a case describes.
pub fn prepare(case: &Case, harness: &Harness) -> Result<(Setup, Input), String> {
    let grants = case.grants.clone().unwrap_or_else(|| {
        harness
            .plugin()
            .manifest
            .capabilities
            .outbound_hosts
            .iter()
            .map(|h| h.to_string())
            .collect()
    });
    let setup = Setup {
        config: case.config.clone(),
        secrets: case.secrets.clone(),
        grants,
        allow_networks: Vec::new(),
        kv: case.kv.clone(),
        fake: Some(case.responses.clone()),
    };
    let input = match case.export.as_str() {
        "on-call-event" => {
            let e = case.event.as_ref().ok_or(
                "`export = \"on-call-event\"` needs an `event = { state = …, from = …, to = … }`",
            )?;
            let mut ev =
                EventFile::make(e.state, e.from.as_deref(), &e.to, e.direction, e.duration)?;
            if let Some(id) = &e.call_id {
                ev.call_id = id.clone();
            }
            ev.answered_by = e.answered_by.clone();
            Input::Event(Box::new(ev))
        }
        "lookup-contact" => Input::Lookup(
            case.number
                .clone()
                .ok_or("`export = \"lookup-contact\"` needs `number = \"+49…\"`")?,
        ),
        "validate-config" => Input::Validate,
        other => {
            return Err(format!(
                "`export = \"{other}\"` is not one a case can run; use on-call-event, lookup-contact or validate-config"
            ));
        }
    };
    Ok((setup, input))
}

/// Everything that differs between what a case expects and what happened.
pub fn check(case: &Case, o: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    let e = &case.expect;
    if o.verdict.kind() != e.result {
        let why = match &o.verdict {
            Verdict::Ok { .. } => String::new(),
            Verdict::Retryable { message, .. }
            | Verdict::Permanent { message }
            | Verdict::Fault { message } => format!(": {message}"),
        };
        bad.push(format!(
            "expected result {}, got {}{why}",
            e.result,
            o.verdict.kind()
        ));
    }
    if let Some(text) = &e.message_contains {
        let msg = match &o.verdict {
            Verdict::Ok { .. } => "",
            Verdict::Retryable { message, .. }
            | Verdict::Permanent { message }
            | Verdict::Fault { message } => message.as_str(),
        };
        if !msg.contains(text.as_str()) {
            bad.push(format!(
                "expected the error message to contain {text:?}, got {msg:?}"
            ));
        }
    }
    if let (Some(want), Verdict::Ok { value }) = (&e.contact, &o.verdict) {
        match want {
            toml::Value::Boolean(false) if !value.is_null() => {
                bad.push(format!("expected no contact, got {value}"))
            }
            toml::Value::Boolean(_) => {}
            other => {
                let want = serde_json::to_value(other).unwrap_or_default();
                if !subset(&want, value) {
                    bad.push(format!("expected a contact with {want}, got {value}"));
                }
            }
        }
    }
    for (i, want) in e.requests.iter().enumerate() {
        let Some(got) = o.requests.get(i) else {
            bad.push(format!(
                "expected request #{} {} {}, but the connector made only {} request(s)",
                i + 1,
                want.method,
                want.path,
                o.requests.len()
            ));
            continue;
        };
        let uri: http::Uri = got.url.parse().unwrap_or_default();
        let path = if want.path.contains('?') {
            uri.path_and_query().map(|p| p.as_str().to_owned())
        } else {
            Some(uri.path().to_owned())
        }
        .unwrap_or_default();
        let label = format!("request #{} ({} {})", i + 1, got.method, got.url);
        if !got.method.eq_ignore_ascii_case(&want.method) || path != want.path {
            bad.push(format!("{label}: expected {} {}", want.method, want.path));
        }
        if let Some(err) = &got.error {
            bad.push(format!("{label}: got no response: {err}"));
        }
        for (k, v) in &want.headers {
            let found = got
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, x)| x.as_str());
            if found != Some(v.as_str()) {
                bad.push(format!(
                    "{label}: expected header {k}: {v}, got {}",
                    found.unwrap_or("none")
                ));
            }
        }
        if let Some(want_json) = &want.json {
            let want_json = serde_json::to_value(want_json).unwrap_or_default();
            match serde_json::from_str::<serde_json::Value>(&got.body) {
                Ok(body) if subset(&want_json, &body) => {}
                Ok(body) => bad.push(format!(
                    "{label}: expected a JSON body with {want_json}, got {body}"
                )),
                Err(_) => bad.push(format!(
                    "{label}: expected a JSON body with {want_json}, got {:?}",
                    got.body
                )),
            }
        }
        if let Some(text) = &want.body_contains
            && !got.body.contains(text.as_str())
        {
            bad.push(format!(
                "{label}: expected the body to contain {text:?}, got {:?}",
                got.body
            ));
        }
    }
    if !e.other_requests && o.requests.len() > e.requests.len() {
        for r in &o.requests[e.requests.len()..] {
            bad.push(format!(
                "unexpected request {} {}: list it under [[expect.requests]] or set expect.other-requests = true",
                r.method, r.url
            ));
        }
    }
    for text in &e.log_contains {
        if !o.log.iter().any(|l| l.message.contains(text.as_str())) {
            bad.push(format!(
                "expected a log line containing {text:?}; the log was {:?}",
                o.log.iter().map(|l| &l.message).collect::<Vec<_>>()
            ));
        }
    }
    for (k, v) in &e.kv {
        match o.kv.get(k) {
            Some(x) if x == v => {}
            other => bad.push(format!(
                "expected key-value {k} = {v:?} after the call, got {other:?}"
            )),
        }
    }
    bad
}

/// Whether every field of `want` is in `got` with the same value (objects
/// recursively; other values exactly).
fn subset(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|x| subset(v, x))),
        _ => want == got,
    }
}

/// Runs every case of `dir`, printing one line per case; `Ok(failed)`.
pub async fn run_all(dir: &Path, harness: &Harness) -> Result<usize, String> {
    let files = discover(dir)?;
    if files.is_empty() {
        return Err(format!(
            "{}: no *.toml cases; add one (see docs/connectors/testing in the guide)",
            dir.join("tests").display()
        ));
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = match load(f).and_then(|case| prepare(&case, harness).map(|p| (case, p))) {
            Err(e) => Err(vec![e]),
            Ok((case, (setup, input))) => match harness.run(&setup, input).await {
                Err(e) => Err(vec![e]),
                Ok(o) => {
                    let bad = check(&case, &o);
                    if bad.is_empty() {
                        Ok(o.elapsed_ms)
                    } else {
                        let mut bad = bad;
                        if !case.description.is_empty() {
                            bad.insert(0, case.description.clone());
                        }
                        Err(bad)
                    }
                }
            },
        };
        match result {
            Ok(ms) => {
                passed += 1;
                println!("PASS  {name} ({ms:.1} ms)");
            }
            Err(bad) => {
                failed += 1;
                println!("FAIL  {name}");
                for b in bad {
                    println!("      {b}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed)
}
