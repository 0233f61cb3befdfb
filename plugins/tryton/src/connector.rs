//! The connector: Tryton JSON-RPC session, party search by phone, notes.

use base64::Engine;
use leansync_plugin_api::cache::LookupCache;
use leansync_plugin_api::phone::{self, E164};
use leansync_plugin_api::policy::CallPolicy;
use leansync_plugin_api::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::note;

/// How long a Tryton session is reused (Tryton's default idle timeout is
/// 10 minutes).
const SESSION_TTL_SECS: u32 = 300;
/// Upper bound for caching "no party has this number".
const NEGATIVE_TTL_SECS: u32 = 30;

#[derive(Deserialize)]
struct Config {
    url: String,
    database: String,
    username: String,
    #[serde(default)]
    create_unknown_callers: bool,
    #[serde(default = "default_unknown_name")]
    unknown_party_name: String,
    #[serde(default)]
    client_url: Option<String>,
    #[serde(default = "default_cache_ttl")]
    cache_ttl_secs: u32,
    #[serde(flatten)]
    policy: CallPolicy,
}

fn default_unknown_name() -> String {
    "Caller {number}".into()
}

fn default_cache_ttl() -> u32 {
    60
}

/// A party found for a number.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Party {
    id: i64,
    name: String,
}

struct Tryton;

impl Connector for Tryton {
    fn validate_config(config: serde_json::Value) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let url = config["url"].as_str().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            issues.push(ConfigIssue {
                field: "/url".into(),
                message: format!(
                    "'{url}' is not an http(s) URL; enter the Tryton server's address, e.g. https://erp.example.com:8000"
                ),
            });
        }
        if let Some(t) = config["client_url"].as_str()
            && !t.contains("{id}")
        {
            issues.push(ConfigIssue {
                field: "/client_url".into(),
                message: format!(
                    "'{t}' has no {{id}} placeholder; e.g. https://erp.example.com/#mydb/model/party.party/{{id}}"
                ),
            });
        }
        if let Err(e) = serde_json::from_value::<Config>(config) {
            issues.push(ConfigIssue {
                field: String::new(),
                message: e.to_string(),
            });
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    fn on_call_event(event: CallEvent, delivery: Delivery) -> Result<(), ConnectorError> {
        if !matches!(event.state, CallState::Ended | CallState::Missed) {
            return Ok(());
        }
        let cfg: Config = config()?;
        if !cfg.policy.should_journal(&event) {
            return Ok(());
        }
        let Some(number) = note::counterpart(&event).and_then(|n| cfg.policy.resolvable(n)) else {
            return Ok(());
        };
        let rpc = Rpc::new(&cfg);
        let found = find_parties(&rpc, &cfg, &number)?;
        let mut parties = cfg.policy.pick(found.clone());
        if found.is_empty() && cfg.create_unknown_callers {
            // Ask Tryton itself, not the cache: someone may have added the
            // party since the lookup, and a duplicate party is worse than a
            // request.
            let fresh = search_parties(&rpc, &cfg, &number)?;
            parties = if fresh.is_empty() {
                vec![create_party(&rpc, &cfg, &number)?]
            } else {
                cache(&cfg).forget(&number.to_string());
                cfg.policy.pick(fresh)
            };
        }
        for party in parties {
            let resource = format!("party.party,{}", party.id);
            if delivery.attempt > 1 && note_exists(&rpc, &resource, &note::marker(&event))? {
                continue;
            }
            rpc.call(
                "model.ir.note.create",
                json!([[{ "resource": resource, "message": note::text(&event) }], {}]),
            )?;
        }
        Ok(())
    }

    fn lookup_contact(number: String) -> Result<Option<Contact>, ConnectorError> {
        let cfg: Config = config()?;
        let Some(number) = cfg.policy.resolvable(&number) else {
            return Ok(None);
        };
        let parties = cfg
            .policy
            .pick(find_parties(&Rpc::new(&cfg), &cfg, &number)?);
        let Some(first) = parties.first() else {
            return Ok(None);
        };
        Ok(Some(Contact {
            name: parties
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(" / "),
            organisation: None,
            deep_link: (parties.len() == 1).then(|| deep_link(&cfg, first.id)),
            source: "tryton".into(),
        }))
    }
}

export!(Tryton);

fn cache(cfg: &Config) -> LookupCache {
    LookupCache::new(
        "party",
        cfg.cache_ttl_secs,
        cfg.cache_ttl_secs.min(NEGATIVE_TTL_SECS),
    )
}

/// Parties with a phone or mobile contact mechanism that is `number` in
/// any format, in id order; cached per installation.
fn find_parties(rpc: &Rpc, cfg: &Config, number: &E164) -> Result<Vec<Party>, ConnectorError> {
    let cached = cache(cfg).get_or_fetch(&number.to_string(), || {
        let parties = search_parties(rpc, cfg, number)?;
        Ok::<_, ConnectorError>((!parties.is_empty()).then_some(parties))
    })?;
    Ok(cached.unwrap_or_default())
}

fn search_parties(rpc: &Rpc, cfg: &Config, number: &E164) -> Result<Vec<Party>, ConnectorError> {
    // Tryton stores what users typed (E.164 in `value_compact` only when the
    // server has the phonenumbers package): search the usual spellings and
    // values holding the last 7 digits in order with anything between them
    // (`+41 (0)44 123 45 67`), then keep the rows that really are this number.
    let variants = phone::search_variants(number);
    let domain = json!([
        ["type", "in", ["phone", "mobile"]],
        [
            "OR",
            ["value_compact", "in", variants],
            ["value", "in", variants],
            ["value", "ilike", digits_in_order(number.last_digits(7))]
        ]
    ]);
    let rows = rpc.call(
        "model.party.contact_mechanism.search_read",
        json!([
            domain,
            0,
            500,
            [["party", "ASC"]],
            ["value", "party", "party.name"],
            {}
        ]),
    )?;
    let mut parties: Vec<Party> = Vec::new();
    for row in rows.as_array().into_iter().flatten() {
        let value = row["value"].as_str().unwrap_or_default();
        let same = E164::parse(value, &cfg.policy.default_country).is_ok_and(|n| &n == number);
        let Some(id) = row["party"].as_i64() else {
            continue;
        };
        if same && !parties.iter().any(|p| p.id == id) {
            parties.push(Party {
                id,
                name: row["party."]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    parties.sort_by_key(|p| p.id);
    Ok(parties)
}

/// `%1%2%3%4%5%6%7%`: a LIKE pattern for the digits with any punctuation between.
fn digits_in_order(digits: &str) -> String {
    let mut pattern = String::from("%");
    for d in digits.chars() {
        pattern.push(d);
        pattern.push('%');
    }
    pattern
}

fn create_party(rpc: &Rpc, cfg: &Config, number: &E164) -> Result<Party, ConnectorError> {
    let name = cfg
        .unknown_party_name
        .replace("{number}", &number.to_string());
    let ids = rpc.call(
        "model.party.party.create",
        json!([[{
            "name": name,
            "contact_mechanisms": [["create", [{ "type": "phone", "value": number.to_string() }]]],
        }], {}]),
    )?;
    let id = ids[0].as_i64().ok_or_else(|| {
        permanent(format!(
            "Tryton answered party.party.create with {ids}, not a new id"
        ))
    })?;
    cache(cfg).forget(&number.to_string());
    log::info(&format!(
        "created Tryton party {id} for unknown caller {number}"
    ));
    Ok(Party { id, name })
}

fn note_exists(rpc: &Rpc, resource: &str, marker: &str) -> Result<bool, ConnectorError> {
    let ids = rpc.call(
        "model.ir.note.search",
        json!([
            [
                ["resource", "=", resource],
                ["message", "ilike", format!("%{marker}%")]
            ],
            0,
            1,
            null,
            {}
        ]),
    )?;
    Ok(ids.as_array().is_some_and(|a| !a.is_empty()))
}

fn deep_link(cfg: &Config, id: i64) -> String {
    match &cfg.client_url {
        Some(t) => t.replace("{id}", &id.to_string()),
        None => {
            let authority = cfg
                .url
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default();
            format!(
                "tryton://{authority}/{}/model/party.party/{id}",
                cfg.database
            )
        }
    }
}

/// Tryton's JSON-RPC endpoint of one database, with a session kept in the
/// installation's key-value state.
struct Rpc<'a> {
    cfg: &'a Config,
    endpoint: String,
}

impl<'a> Rpc<'a> {
    fn new(cfg: &'a Config) -> Self {
        Self {
            cfg,
            endpoint: format!("{}/{}/", cfg.url.trim_end_matches('/'), cfg.database),
        }
    }

    /// Calls `method`; logs in (again) when there is no valid session.
    fn call(&self, method: &str, params: Value) -> Result<Value, ConnectorError> {
        let cached = kv::get("session").and_then(|v| String::from_utf8(v).ok());
        let fresh_login = cached.is_none();
        let session = match cached {
            Some(s) => s,
            None => self.login()?,
        };
        let resp = self.post(method, &params, Some(&session))?;
        let resp = if matches!(resp.status, 401 | 403) && !fresh_login {
            // The cached session expired on the server.
            kv::delete("session");
            let session = self.login()?;
            self.post(method, &params, Some(&session))?
        } else {
            resp
        };
        if matches!(resp.status, 401 | 403) {
            return Err(permanent(format!(
                "Tryton at {} denied {method} to user '{}' (HTTP {}): give the user access to parties, contact mechanisms and notes",
                self.endpoint, self.cfg.username, resp.status
            )));
        }
        self.result(method, resp)
    }

    fn login(&self) -> Result<String, ConnectorError> {
        let password = secret("password").unwrap_or_default();
        let params = json!([self.cfg.username, { "password": password }, "en"]);
        let resp = self.post("common.db.login", &params, None)?;
        if matches!(resp.status, 401 | 403) {
            return Err(permanent(format!(
                "Tryton at {} refused the login of user '{}' (HTTP {}): check the username and the password in the installation's config",
                self.endpoint, self.cfg.username, resp.status
            )));
        }
        let result = self.result("common.db.login", resp)?;
        let (Some(uid), Some(key)) = (result[0].as_i64(), result[1].as_str()) else {
            return Err(permanent(format!(
                "Tryton at {} answered the login of '{}' with {result}: check the username and the password",
                self.endpoint, self.cfg.username
            )));
        };
        let session = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{uid}:{key}", self.cfg.username));
        if let Err(e) = kv::set("session", session.as_bytes(), Some(SESSION_TTL_SECS)) {
            log::warn(&format!(
                "cannot keep the Tryton session: {e}; logging in per call"
            ));
        }
        Ok(session)
    }

    fn post(
        &self,
        method: &str,
        params: &Value,
        session: Option<&str>,
    ) -> Result<http::Response, ConnectorError> {
        let mut req = http::Request::post(&self.endpoint)
            .json(&json!({ "id": 1, "method": method, "params": params }));
        if let Some(s) = session {
            req = req.header("authorization", &format!("Session {s}"));
        }
        req.send().map_err(http::transport_error)
    }

    /// The `result` of a JSON-RPC answer; a Tryton error names the method.
    fn result(&self, method: &str, resp: http::Response) -> Result<Value, ConnectorError> {
        if resp.status == 404 {
            return Err(permanent(format!(
                "no Tryton database '{}' at {} (HTTP 404): check the server URL and the database name",
                self.cfg.database, self.cfg.url
            )));
        }
        let resp = resp.error_for_status()?;
        let body: Value = resp.json().map_err(|e| {
            permanent(format!(
                "Tryton at {} answered {method} with something else than JSON-RPC: {e}",
                self.endpoint
            ))
        })?;
        if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
            return Err(permanent(format!(
                "Tryton rejected {method}: {err}; check that the party module is activated in database '{}' and the user may use it",
                self.cfg.database
            )));
        }
        Ok(body["result"].clone())
    }
}
