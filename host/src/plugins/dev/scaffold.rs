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
        Lang::Python | Lang::Js => guest_files(name, lang),
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

/// `{{name}}`, `{{crate}}` (the name with `_`) and `{{title}}` filled in.
fn filler(name: &str) -> impl Fn(&str) -> String + '_ {
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
    move |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{title}}", &title)
    }
}

/// The WIT a Python or JavaScript project binds: the guest world, the
/// connector API and the WASI packages, as `wit/` of the project.
const GUEST_WIT: &[(&str, &str)] = &[
    (
        "wit/world.wit",
        include_str!("../../../../plugin-api/wit/guest/world.wit"),
    ),
    (
        "wit/deps/connector.wit",
        include_str!("../../../../plugin-api/wit/v1.1.0/connector.wit"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/http.wit"),
    ),
    (
        "wit/deps/io.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/io.wit"),
    ),
    (
        "wit/deps/random.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../../plugin-api/wit/wasi-0.2.12/sockets.wit"),
    ),
];

fn guest_files(name: &str, lang: Lang) -> Vec<(&'static str, String)> {
    let fill = filler(name);
    let (source, text) = if lang == Lang::Python {
        ("app.py", PY_APP)
    } else {
        ("app.js", JS_APP)
    };
    let build = super::build::default_command(lang, "{{crate}}.wasm").unwrap_or_default();
    let manifest = PLUGIN_TOML.to_string()
        + "\n# How `leansync plugin build` makes the component.\n[build]\ncommand = \""
        + &build
        + "\"\n";
    let mut files = vec![
        ("plugin.toml", fill(&manifest)),
        (source, fill(text)),
        ("tests/missed_call.toml", fill(CASE_MISSED)),
        ("tests/lookup.toml", fill(CASE_LOOKUP)),
        ("tests/app_down.toml", fill(CASE_DOWN)),
        (
            "README.md",
            fill(if lang == Lang::Python {
                PY_README
            } else {
                JS_README
            }),
        ),
        (
            ".gitignore",
            "*.wasm\n__pycache__/\nnode_modules/\n".to_string(),
        ),
    ];
    files.extend(GUEST_WIT.iter().map(|(p, t)| (*p, t.to_string())));
    files
}

fn rust_files(name: &str, sdk: Option<&Path>) -> Result<Vec<(&'static str, String)>, String> {
    let fill = filler(name);
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

/// Native unit tests (`cargo test`): the SDK's test host plays the host and
/// the app. `leansync plugin test .` runs tests/*.toml in the real sandbox.
#[cfg(test)]
mod tests {
    use super::*;
    use leansync_plugin_api::testing::{TestHost, delivery, event};

    fn host() -> TestHost {
        TestHost::new()
            .config(json!({ "base_url": "https://api.example.com" }))
            .secret("api_token", "test-token")
    }

    #[test]
    fn a_missed_call_is_journaled() {
        let ev = event(CallState::Missed, Some("+4930123456"), "+4989123456");
        let (result, host) = host()
            .respond("POST", "/calls", 201, "")
            .run(|| App::on_call_event(ev, delivery()));
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(host.requests.len(), 1);
        let sent: serde_json::Value = serde_json::from_slice(&host.requests[0].body).unwrap();
        assert_eq!(sent["state"], "missed");
        assert_eq!(sent["number"], "+4930123456");
    }

    #[test]
    fn ringing_is_not_journaled() {
        let ev = event(CallState::Ringing, Some("+4930123456"), "+4989123456");
        let (result, host) = host().run(|| App::on_call_event(ev, delivery()));
        assert!(result.is_ok());
        assert!(host.requests.is_empty());
    }

    #[test]
    fn a_known_number_resolves() {
        let found = json!([{ "name": "Anna Muster", "company": "Muster GmbH" }]);
        let (result, _) = host()
            .respond_json("GET", "/contacts?phone=%2B4930123456", 200, &found)
            .run(|| App::lookup_contact("+4930123456".into()));
        assert_eq!(result.unwrap().unwrap().name, "Anna Muster");
    }
}
"#;

const PY_APP: &str = r#""""{{title}} connector (Python, componentize-py): resolves callers through
GET {base_url}/contacts and journals answered and missed calls with
POST {base_url}/calls. Replace the placeholder API with your app's.

Exports are the methods of `Connector`; a WIT `result` error is raised as
`Err(...)`, anything else raised is a fault of the call.
"""

import json
from urllib.parse import quote, urlsplit

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, outgoing_handler
from wit_world.imports.leansync_connector_types import (
    CallState,
    ConnectorError_Permanent,
    ConnectorError_Retryable,
    Contact,
    HttpResponse,
    LogLevel,
    RetryableError,
)
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    Fields,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)


def permanent(message):
    return Err(ConnectorError_Permanent(message))


def retryable(message, retry_after_ms=None):
    return Err(ConnectorError_Retryable(RetryableError(message=message, retry_after_ms=retry_after_ms)))


def http(method, url, headers, body=b""):
    """One request over wasi:http: (status, headers, body). A transport
    failure (host not granted, connection refused) is retryable."""
    u = urlsplit(url)
    fields = [(k.lower(), v.encode()) for k, v in headers.items()]
    if body:
        fields.append(("content-length", str(len(body)).encode()))
    req = OutgoingRequest(Fields.from_list(fields))
    req.set_method(Method_Post() if method == "POST" else Method_Get())
    req.set_scheme(Scheme_Https() if u.scheme == "https" else Scheme_Http())
    req.set_authority(u.netloc)
    req.set_path_with_query((u.path or "/") + ("?" + u.query if u.query else ""))
    out = req.body()
    with out.write() as stream:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise retryable(f"{method} {url} failed: {e.value}")
    OutgoingBody.finish(out, None)
    with future.subscribe() as ready:
        ready.block()
    result = future.get()
    if result is None or isinstance(result, Err) or isinstance(result.value, Err):
        why = result.value.value if result is not None and not isinstance(result, Err) else "no response"
        raise retryable(f"{method} {url} failed: {why}")
    resp = result.value.value
    with resp.headers() as h:
        got_headers = {k.lower(): v.decode() for k, v in h.entries()}
    data = b""
    incoming = resp.consume()
    with incoming.stream() as s:
        while True:
            try:
                data += s.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    return resp.status(), got_headers, data


def check(url, status, headers):
    """2xx passes; 408, 429 and 5xx are retryable (with Retry-After), other errors permanent."""
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        after = headers.get("retry-after", "")
        raise retryable(f"{url} answered {status}", int(after) * 1000 if after.isdigit() else None)
    raise permanent(f"{url} answered {status}")


def base_url():
    return json.loads(host.config())["base_url"].rstrip("/")


def token():
    t = host.secret("api_token")
    if t is None:
        raise permanent("no api_token: set it in the connector's settings")
    return t


class Connector(exports.Connector):
    def validate_config(self, config: str) -> None:
        return None

    def on_call_event(self, event, delivery) -> None:
        if event.state == CallState.ENDED:
            outcome = "answered"
        elif event.state == CallState.MISSED:
            outcome = "missed"
        else:
            return  # ringing and answered are shown live; only finished calls are journaled
        url = f"{base_url()}/calls"
        body = json.dumps(
            {
                "call_id": event.call_id,
                "number": event.caller,
                "line": event.licensed_number,
                "direction": event.direction.name.lower(),
                "state": outcome,
                "duration_secs": event.duration_secs,
                # Who picked up (connector API 1.1), when the telephony says.
                "answered_by": event.answered_by,
            }
        ).encode()
        headers = {
            "authorization": f"Bearer {token()}",
            "idempotency-key": delivery.idempotency_key,
            "content-type": "application/json",
        }
        status, got, _ = http("POST", url, headers, body)
        check(url, status, got)
        host.log(LogLevel.INFO, f"journaled {outcome} call {event.call_id}")

    def lookup_contact(self, number: str):
        url = f"{base_url()}/contacts?phone={quote(number)}"
        status, got, data = http("GET", url, {"authorization": f"Bearer {token()}"})
        check(url, status, got)
        try:
            found = json.loads(data)
        except ValueError as e:
            raise permanent(f"unexpected answer from {url}: {e}")
        if not found:
            return None
        c = found[0]
        return Contact(name=c["name"], organisation=c.get("company"), deep_link=c.get("url"), source="{{name}}")

    def handle_http(self, request) -> HttpResponse:
        body = json.dumps({"error": "this connector has no webhook routes"}).encode()
        return HttpResponse(status=404, headers=[("content-type", "application/json")], body=body)
"#;

const JS_APP: &str = r#"// {{title}} connector (JavaScript, componentize-js): resolves callers
// through GET {base_url}/contacts and journals answered and missed calls with
// POST {base_url}/calls. Replace the placeholder API with your app's.
//
// Exports are the methods of `connector` (camelCase); a WIT `result` error
// is thrown as its value ({ tag, val }); anything else thrown traps the call.
// fetch() is the host's wasi:http client.
import { log, config, secret } from 'leansync:connector/host@1.1.0';

const permanent = (message) => ({ tag: 'permanent', val: message });
const retryable = (message, retryAfterMs) => ({ tag: 'retryable', val: { message, retryAfterMs } });

const baseUrl = () => JSON.parse(config()).base_url.replace(/\/+$/, '');

function token() {
  const t = secret('api_token');
  if (t === undefined) throw permanent("no api_token: set it in the connector's settings");
  return t;
}

// One request; 2xx gives the body text, 408/429/5xx are retryable (with
// Retry-After), other errors permanent, transport failures retryable.
async function call(method, url, headers, body) {
  let res;
  try {
    res = await fetch(url, { method, headers, body });
  } catch (e) {
    throw retryable(`${method} ${url} failed: ${e}`);
  }
  const text = await res.text();
  if (res.ok) return text;
  if (res.status === 408 || res.status === 429 || res.status >= 500) {
    const after = Number(res.headers.get('retry-after'));
    throw retryable(`${url} answered ${res.status}`, after > 0 ? BigInt(after * 1000) : undefined);
  }
  throw permanent(`${url} answered ${res.status}`);
}

export const connector = {
  validateConfig(_config) {},

  async onCallEvent(event, delivery) {
    const outcome = { ended: 'answered', missed: 'missed' }[event.state];
    if (!outcome) return; // ringing and answered are shown live; only finished calls are journaled
    const body = JSON.stringify({
      call_id: event.callId,
      number: event.caller ?? null,
      line: event.licensedNumber,
      direction: event.direction,
      state: outcome,
      duration_secs: event.durationSecs ?? null,
      // Who picked up (connector API 1.1), when the telephony says.
      answered_by: event.answeredBy ?? null,
    });
    await call('POST', `${baseUrl()}/calls`, {
      authorization: `Bearer ${token()}`,
      'idempotency-key': delivery.idempotencyKey,
      'content-type': 'application/json',
    }, body);
    log('info', `journaled ${outcome} call ${event.callId}`);
  },

  async lookupContact(number) {
    const url = `${baseUrl()}/contacts?phone=${encodeURIComponent(number)}`;
    const text = await call('GET', url, { authorization: `Bearer ${token()}` });
    let found;
    try {
      found = JSON.parse(text);
    } catch (e) {
      throw permanent(`unexpected answer from ${url}: ${e}`);
    }
    if (!found.length) return undefined;
    const c = found[0];
    return { name: c.name, organisation: c.company ?? undefined, deepLink: c.url ?? undefined, source: '{{name}}' };
  },

  handleHttp(_request) {
    const body = new TextEncoder().encode(JSON.stringify({ error: 'this connector has no webhook routes' }));
    return { status: 404, headers: [['content-type', 'application/json']], body };
  },
};
"#;

const PY_README: &str = r#"# {{title}} — a LeanSync Voice connector in Python

Shows who calls (`lookup_contact`) and journals answered and missed calls
(`on_call_event`) against a placeholder REST API; replace it with your app's.
Built with componentize-py, which bundles its own CPython (3.14) into the
component: only the standard library is available.

```sh
pip install componentize-py==0.25.1     # once (a venv is fine)
leansync plugin build .                 # componentize-py (see [build] in plugin.toml), then the host's checks
leansync plugin test .                  # runs every case in tests/ against a fake app
leansync plugin event missed --from +4930123456 --to +4989123456 > missed.json
leansync plugin call . on-call-event --event missed.json     --settings settings.json --secret api_token=… --grant api.example.com
```

- `app.py` — the connector: the methods of `class Connector`.
- `wit/` — the connector API (`leansync:connector@1.1.0`) and the WASI
  packages it binds; regenerate with `leansync plugin new` when you move to
  a newer API.
- `plugin.toml`, `tests/*.toml` — as for every connector (see the author
  guide, docs/connectors/README.md).

Ship it: copy `plugin.toml` and `{{crate}}.wasm` into the host's
`plugins/{{name}}/`. The component is about 19 MB and takes a few seconds to
compile once; the host caches it compiled.
"#;

const JS_README: &str = r#"# {{title}} — a LeanSync Voice connector in JavaScript

Shows who calls (`lookupContact`) and journals answered and missed calls
(`onCallEvent`) against a placeholder REST API; replace it with your app's.
Built with componentize-js (SpiderMonkey); `fetch()` is the host's HTTP
client, and only what the engine has built in is available (no npm
packages without bundling them into `app.js` first).

```sh
npm install -g @bytecodealliance/componentize-js@0.23.0   # once
leansync plugin build .                 # componentize-js (see [build] in plugin.toml), then the host's checks
leansync plugin test .                  # runs every case in tests/ against a fake app
leansync plugin event missed --from +4930123456 --to +4989123456 > missed.json
leansync plugin call . on-call-event --event missed.json     --settings settings.json --secret api_token=… --grant api.example.com
```

- `app.js` — the connector: the methods of `connector`.
- `wit/` — the connector API (`leansync:connector@1.1.0`) and the WASI
  packages it binds.
- `plugin.toml`, `tests/*.toml` — as for every connector (see the author
  guide, docs/connectors/README.md).

Ship it: copy `plugin.toml` and `{{crate}}.wasm` into the host's
`plugins/{{name}}/`. The component is about 13 MB and takes a few seconds to
compile once; the host caches it compiled.
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
leansync plugin test .                  # runs every case in tests/ against a fake app, in the sandbox
cargo test                              # the native unit tests in src/lib.rs (the SDK's testing::TestHost)
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
