//! `leansync plugin new NAME`: a standalone connector project that builds
//! and passes its own tests unchanged, anywhere on disk.

use std::path::{Path, PathBuf};

use super::build::Lang;

/// Where the scaffold finds the SDK offline: the checkout this binary was
/// built from, when it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
    p.join("Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// Writes a new connector project `name` into `dir` (which must not exist
/// or be empty); `sdk` is the local SDK folder a Rust project patches in.
pub fn new_connector(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "connector name {name:?} is invalid: use 1-64 characters from a-z, 0-9 and -, starting with a letter (e.g. acme-crm)"
        ));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "{} already exists and is not empty; choose another --dir or remove it",
            dir.display()
        ));
    }
    let files = match lang {
        Lang::Rust => rust_files(name, sdk)?,
        Lang::Python | Lang::Js => {
            return Err(format!(
                "--lang {}: not available yet in this version; Python (componentize-py) and JavaScript (jco) templates are planned. Use --lang rust",
                if lang == Lang::Js { "js" } else { "python" }
            ));
        }
    };
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn rust_files(name: &str, sdk: Option<&Path>) -> Result<Vec<(&'static str, String)>, String> {
    let crate_name = name.replace('-', "_");
    let title = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{title}}", &title)
    };
    let mut files = vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("plugin.toml", fill(PLUGIN_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/missed_call.toml", fill(CASE_MISSED)),
        ("tests/lookup.toml", fill(CASE_LOOKUP)),
        ("tests/app_down.toml", fill(CASE_DOWN)),
        ("README.md", fill(README)),
        (".gitignore", "/target\n*.wasm\n".to_string()),
    ];
    if let Some(sdk) = sdk {
        let sdk = sdk.canonicalize().map_err(|e| {
            format!(
                "--sdk {}: {e}; point it at the plugin-api folder of a LeanSync checkout",
                sdk.display()
            )
        })?;
        if !sdk.join("Cargo.toml").is_file() {
            return Err(format!(
                "--sdk {}: no Cargo.toml there; point it at the plugin-api folder of a LeanSync checkout",
                sdk.display()
            ));
        }
        files.push((
                ".cargo/config.toml",
                format!(
                    "# Build against the SDK of a local LeanSync checkout (offline) instead\n# of crates.io. Delete this file to use the published crate.\n[patch.crates-io]\nleansync-plugin-api = {{ path = {:?} }}\n",
                    sdk.display().to_string()
                ),
            ));
    }
    Ok(files)
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

# A standalone workspace: this folder builds on its own, anywhere.
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
leansync-plugin-api = "1.1"
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
"#;

const PLUGIN_TOML: &str = r#"name = "{{name}}"
version = "0.1.0"
api = "^1.1"
description = "{{title}}: shows who calls and journals every call"
component = "{{crate}}.wasm"
# This connector resolves numbers to contacts (lookup-contact).
lookup = true

[capabilities]
# Hosts it may call; each installation's admin grants them.
outbound-hosts = ["api.example.com"]
# It reads the api_token secret below.
secrets = true

# What an admin fills in when installing it; the portal renders this form.
[config-schema]
type = "object"
required = ["base_url", "api_token"]

[config-schema.properties.base_url]
type = "string"
format = "uri"
title = "API base URL"
default = "https://api.example.com"

[config-schema.properties.api_token]
type = "string"
title = "API token"
x-secret = true
"#;

const LIB_RS: &str = r#"//! {{title}} connector: resolves callers through `GET {base_url}/contacts`
//! and journals answered and missed calls with `POST {base_url}/calls`.
//! Replace the placeholder API with your app's.

use leansync_plugin_api::*;
use serde::Deserialize;
use serde_json::json;

struct App;

#[derive(Deserialize)]
struct Settings {
    base_url: String,
}

/// One record of the app's contact search.
#[derive(Deserialize)]
struct AppContact {
    name: String,
    company: Option<String>,
    url: Option<String>,
}

fn settings() -> Result<Settings, ConnectorError> {
    config()
}

fn token() -> Result<String, ConnectorError> {
    secret("api_token").ok_or_else(|| permanent("no api_token: set it in the connector's settings"))
}

impl Connector for App {
    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        let outcome = match event.state {
            CallState::Ended => "answered",
            CallState::Missed => "missed",
            // Ringing and answered are shown live; only finished calls are journaled.
            _ => return Ok(()),
        };
        let s = settings()?;
        let body = json!({
            "call_id": event.call_id,
            "number": event.caller,
            "line": event.licensed_number,
            "direction": format!("{:?}", event.direction).to_lowercase(),
            "state": outcome,
            "duration_secs": event.duration_secs,
            // Who picked up (connector API 1.1), when the telephony says.
            "answered_by": event.answered_by,
        });
        http::Request::post(&format!("{}/calls", s.base_url.trim_end_matches('/')))
            .bearer_auth(&token()?)
            .header("idempotency-key", &delivery.idempotency_key)
            .json(&body)
            .send()
            .map_err(http::transport_error)?
            .error_for_status()?;
        log::info(&format!("journaled {outcome} call {}", event.call_id));
        Ok(())
    }

    fn lookup_contact(number: String) -> Result<Option<Contact>, ConnectorError> {
        let s = settings()?;
        let url = format!(
            "{}/contacts?phone={}",
            s.base_url.trim_end_matches('/'),
            number.replace('+', "%2B")
        );
        let found: Vec<AppContact> = http::Request::get(&url)
            .bearer_auth(&token()?)
            .send()
            .map_err(http::transport_error)?
            .error_for_status()?
            .json()
            .map_err(|e| permanent(format!("unexpected answer from {url}: {e}")))?;
        Ok(found.into_iter().next().map(|c| Contact {
            name: c.name,
            organisation: c.company,
            deep_link: c.url,
            source: "{{name}}".into(),
        }))
    }
}

export!(App);
"#;

const CASE_MISSED: &str = r#"description = "a missed call is journaled with the caller's number"
export = "on-call-event"
event = { state = "missed", from = "+4930123456", to = "+4989123456" }
config = { base_url = "https://api.example.com" }
secrets = { api_token = "test-token" }

# The fake app: what it answers.
[[responses]]
method = "POST"
path = "/calls"
status = 201

[expect]
result = "ok"
log-contains = ["journaled missed call"]

# What the connector must send (every request must be listed).
[[expect.requests]]
method = "POST"
path = "/calls"
headers = { authorization = "Bearer test-token" }
json = { state = "missed", number = "+4930123456", line = "+4989123456" }
"#;

const CASE_LOOKUP: &str = r#"description = "a known number resolves to the app's contact"
export = "lookup-contact"
number = "+4930123456"
config = { base_url = "https://api.example.com" }
secrets = { api_token = "test-token" }

[[responses]]
method = "GET"
path = "/contacts?phone=%2B4930123456"
json = [{ name = "Anna Muster", company = "Muster GmbH", url = "https://app.example.com/c/17" }]

[expect]
result = "ok"
contact = { name = "Anna Muster", organisation = "Muster GmbH", deep_link = "https://app.example.com/c/17" }

[[expect.requests]]
method = "GET"
path = "/contacts?phone=%2B4930123456"
headers = { authorization = "Bearer test-token" }
"#;

const CASE_DOWN: &str = r#"description = "an app that is down makes the delivery retry later"
export = "on-call-event"
event = { state = "ended", from = "+4930123456", to = "+4989123456", duration = 65, answered-by = "201" }
config = { base_url = "https://api.example.com" }
secrets = { api_token = "test-token" }

[[responses]]
method = "POST"
path = "/calls"
status = 503
headers = { retry-after = "30" }

[expect]
result = "retryable"

[[expect.requests]]
method = "POST"
path = "/calls"
json = { state = "answered", duration_secs = 65, answered_by = "201" }
"#;

const README: &str = r#"# {{title}} — a LeanSync Voice connector

Shows who calls (`lookup-contact`) and journals answered and missed calls
(`on-call-event`) against a placeholder REST API; replace it with your app's.

```sh
leansync plugin build .                 # cargo build for wasm32-wasip2, then the host's checks
leansync plugin test .                  # runs every case in tests/ against a fake app
leansync plugin event missed --from +4930123456 --to +4989123456 > missed.json
leansync plugin call . on-call-event --event missed.json \
    --settings settings.json --secret api_token=… --grant api.example.com
```

- `plugin.toml` — name, API version, capabilities (hosts it may call,
  secrets) and the config schema the portal renders as a form.
- `src/lib.rs` — the connector.
- `tests/*.toml` — one case each: an event or a number, the config, what
  the fake app answers, and the requests the connector must make.

The SDK is the crate `leansync-plugin-api` (connector API 1.1). Built
offline beside a LeanSync checkout, `.cargo/config.toml` points cargo at the
checkout's `plugin-api` folder; delete that file to use the published crate.

Ship it: copy the folder's `plugin.toml` and `{{crate}}.wasm` into the
host's `plugins/{{name}}/`; the host loads it without a restart.
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::dev::cases;
    use crate::plugins::manifest::Manifest;

    #[test]
    fn a_new_project_has_a_manifest_that_loads_and_cases_that_parse() {
        let dir = std::env::temp_dir().join(format!("leansync-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = new_connector("acme-crm", Lang::Rust, &dir, default_sdk().as_deref()).unwrap();
        assert!(files.iter().any(|f| f.ends_with("src/lib.rs")));
        let m = Manifest::load(&dir).unwrap();
        assert_eq!(m.name, "acme-crm");
        assert_eq!(m.component, PathBuf::from("acme_crm.wasm"));
        assert_eq!(m.secret_fields(), vec!["api_token".to_string()]);
        let found = cases::discover(&dir).unwrap();
        assert_eq!(found.len(), 3);
        for f in found {
            cases::load(&f).unwrap();
        }
        let again = new_connector("acme-crm", Lang::Rust, &dir, None).unwrap_err();
        assert!(again.contains("not empty"), "{again}");
        let bad = new_connector("Acme CRM", Lang::Rust, &dir.join("x"), None).unwrap_err();
        assert!(bad.contains("a-z, 0-9"), "{bad}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
