//! The connector: config, sync against the CardDAV server, lookup.

use leansync_plugin_api::cache::HostKv;
use leansync_plugin_api::policy::{CallPolicy, SharedNumber};
use leansync_plugin_api::*;
use serde::Deserialize;

use crate::dav;
use crate::index::{Change, Entry, Index, Meta};
use crate::vcard;

/// Default seconds between syncs with the server.
const DEFAULT_REFRESH_SECS: u32 = 60;
/// After a failed refresh the stale index is used this long before retrying.
const RETRY_REFRESH_SECS: u32 = 10;
/// Cards fetched per addressbook-multiget when a sync omits card data.
const MULTIGET_CHUNK: usize = 500;

#[derive(Deserialize)]
struct Config {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default = "default_refresh")]
    refresh_secs: u32,
    #[serde(default)]
    contact_url: Option<String>,
    #[serde(flatten)]
    policy: CallPolicy,
}

fn default_refresh() -> u32 {
    DEFAULT_REFRESH_SECS
}

struct CardDav;

impl Connector for CardDav {
    fn validate_config(config: serde_json::Value) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let url = config["url"].as_str().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            issues.push(ConfigIssue {
                field: "/url".into(),
                message: format!(
                    "'{url}' is not an http(s) URL; enter the address book's full URL, e.g. https://dav.example.com/anna/contacts/"
                ),
            });
        }
        if let Some(t) = config["contact_url"].as_str()
            && !t.contains("{uid}")
        {
            issues.push(ConfigIssue {
                field: "/contact_url".into(),
                message: format!(
                    "'{t}' has no {{uid}} placeholder; e.g. https://cloud.example.com/apps/contacts/direct/contact/{{uid}}"
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

    fn on_call_event(_event: CallEvent, _delivery: Delivery) -> Result<(), ConnectorError> {
        // An address book has no journal; the events keep the index fresh
        // so the next ringing call's lookup finds it synced.
        let cfg: Config = config()?;
        ensure_index(&cfg, true).map(|_| ())
    }

    fn lookup_contact(number: String) -> Result<Option<Contact>, ConnectorError> {
        let cfg: Config = config()?;
        let Some(number) = cfg.policy.resolvable(&number) else {
            return Ok(None);
        };
        let meta = ensure_index(&cfg, false)?;
        let found = Index::new(HostKv).find(&meta, &number);
        Ok(contact(&cfg, cfg.policy.pick(found)))
    }
}

export!(CardDav);

/// One contact for the screen: the single match, or for a shared number
/// (rule `all`) every name with the organisation they share.
fn contact(cfg: &Config, found: Vec<Entry>) -> Option<Contact> {
    let first = found.first()?;
    let deep_link = match (&cfg.contact_url, &first.uid) {
        (Some(t), Some(uid)) if found.len() == 1 => Some(t.replace("{uid}", &percent(uid))),
        _ => None,
    };
    let organisation = if found.iter().all(|e| e.organisation == first.organisation) {
        first.organisation.clone()
    } else {
        None
    };
    let mut name = found
        .iter()
        .take(3)
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(" / ");
    if found.len() > 3 && cfg.policy.shared_number == SharedNumber::All {
        name.push_str(&format!(" (+{} more)", found.len() - 3));
    }
    Some(Contact {
        name,
        organisation,
        deep_link,
        source: "carddav".into(),
    })
}

/// The usable index: synced within `refresh_secs`, else refreshed with a
/// sync delta; built from scratch when missing, or when the daily rebuild is
/// due and `may_rebuild` (call events, not the latency-bound lookups). A
/// failed refresh keeps the stale index (a lookup beats none) unless the
/// server refused the credentials.
fn ensure_index(cfg: &Config, may_rebuild: bool) -> Result<Meta, ConnectorError> {
    let index = Index::new(HostKv);
    let meta = match index.meta() {
        Some(meta) if !(may_rebuild && index.rebuild_due()) => meta,
        _ => {
            let meta = full_sync(cfg, &index)?;
            index.mark_fresh(cfg.refresh_secs);
            return Ok(meta);
        }
    };
    if index.is_fresh() {
        return Ok(meta);
    }
    match delta_sync(cfg, &index, meta.clone()) {
        Ok(meta) => {
            index.mark_fresh(cfg.refresh_secs);
            Ok(meta)
        }
        Err(e @ ConnectorError::Permanent(_)) => Err(e),
        Err(ConnectorError::Retryable(e)) => {
            log::warn(&format!(
                "CardDAV refresh failed, using the index of {} cards from the last sync: {}",
                meta.cards, e.message
            ));
            index.mark_fresh(RETRY_REFRESH_SECS);
            Ok(meta)
        }
    }
}

fn full_sync(cfg: &Config, index: &Index<HostKv>) -> Result<Meta, ConnectorError> {
    let ms = report(cfg, dav::sync_collection(None))?;
    let mut cards = Vec::new();
    let mut missing = Vec::new();
    for m in ms.members.into_iter().filter(|m| !m.removed) {
        match m.address_data {
            Some(data) => {
                cards.extend(vcard::parse(&data).into_iter().map(|c| (m.href.clone(), c)))
            }
            // A server may list the collection itself; cards never end in `/`.
            None if !m.href.ends_with('/') => missing.push(m.href),
            None => {}
        }
    }
    cards.extend(
        fetch_cards(cfg, missing)?
            .into_iter()
            .flat_map(|(href, cs)| cs.into_iter().map(move |c| (href.clone(), c))),
    );
    let meta = index
        .rebuild(cards, ms.sync_token, &cfg.policy.default_country)
        .map_err(|e| permanent(format!("cannot store the CardDAV index: {e}")))?;
    log::info(&format!(
        "CardDAV index built: {} cards, {} numbers",
        meta.cards, meta.numbers
    ));
    Ok(meta)
}

fn delta_sync(cfg: &Config, index: &Index<HostKv>, meta: Meta) -> Result<Meta, ConnectorError> {
    let Some(token) = meta.sync_token.clone() else {
        return full_sync(cfg, index);
    };
    let ms = match report(cfg, dav::sync_collection(Some(&token))) {
        Err(ConnectorError::Permanent(m)) if m.contains("valid-sync-token") => {
            // The server forgot the token (expired or reset): start over.
            return full_sync(cfg, index);
        }
        other => other?,
    };
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    for m in ms.members {
        if m.removed {
            changes.push(Change::Remove(m.href));
        } else if let Some(data) = m.address_data {
            changes.push(Change::Upsert(m.href, vcard::parse(&data)));
        } else if !m.href.ends_with('/') {
            missing.push(m.href);
        }
    }
    for (href, cards) in fetch_cards(cfg, missing)? {
        changes.push(Change::Upsert(href, cards));
    }
    if changes.is_empty() && ms.sync_token.as_deref() == Some(token.as_str()) {
        return Ok(meta);
    }
    index
        .apply(meta, changes, ms.sync_token, &cfg.policy.default_country)
        .map_err(|e| permanent(format!("cannot store the CardDAV index: {e}")))
}

/// Cards of servers that list hrefs without card data in a sync.
fn fetch_cards(
    cfg: &Config,
    hrefs: Vec<String>,
) -> Result<Vec<(String, Vec<vcard::Card>)>, ConnectorError> {
    let mut out = Vec::new();
    for chunk in hrefs.chunks(MULTIGET_CHUNK) {
        for m in report(cfg, dav::multiget(chunk))?.members {
            if let Some(data) = m.address_data {
                out.push((m.href, vcard::parse(&data)));
            }
        }
    }
    Ok(out)
}

/// A `REPORT` on the address book; errors name the server, the user and the fix.
fn report(cfg: &Config, body: String) -> Result<dav::MultiStatus, ConnectorError> {
    let mut req = http::Request::new("REPORT", &cfg.url)
        .header("depth", "1")
        .header("content-type", "application/xml; charset=utf-8")
        .body(body.into_bytes());
    let user = cfg.username.clone().unwrap_or_default();
    if !user.is_empty() {
        req = req.basic_auth(&user, &secret("password").unwrap_or_default());
    }
    let resp = req.send().map_err(http::transport_error)?;
    let status = resp.status;
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    match resp.status {
        207 => dav::parse(&text).map_err(|e| {
            permanent(format!("{} answered with an unexpected body: {e}; check that the URL is a CardDAV address book", cfg.url))
        }),
        401 => Err(permanent(format!(
            "CardDAV server returned 401 for user '{user}' at {}: check the username and the password in the installation's config",
            cfg.url
        ))),
        403 | 409 if text.contains("valid-sync-token") => Err(permanent(format!(
            "{} rejected the sync token (valid-sync-token)",
            cfg.url
        ))),
        403 => Err(permanent(format!(
            "CardDAV server returned 403 for user '{user}' at {}: give the user read access to this address book or correct the URL",
            cfg.url
        ))),
        404 => Err(permanent(format!(
            "no address book at {} (HTTP 404): copy the address book's URL from the CardDAV server, including the trailing /",
            cfg.url
        ))),
        405 | 501 => Err(permanent(format!(
            "{} does not support the CardDAV REPORT sync-collection (HTTP {}): use the URL of an address book collection on a server with WebDAV sync (RFC 6578)",
            cfg.url, resp.status
        ))),
        _ => {
            resp.error_for_status()?;
            Err(permanent(format!(
                "{} answered HTTP {} instead of 207 Multi-Status; check that the URL is a CardDAV address book",
                cfg.url, status
            )))
        }
    }
}

/// Percent-encodes a UID for use in a URL path segment.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
