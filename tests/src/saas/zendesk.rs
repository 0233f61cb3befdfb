//! Zendesk Support API v2 (and Talk's agent display) as the `zendesk`
//! connector uses it: user search, organizations, user and ticket creation
//! with `Idempotency-Key`, API token authentication.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

use super::{Fake, Journaled, Saas, Vendor, credentials, field, reply};

/// The agent whose token the fake accepts.
pub const EMAIL: &str = "agent@acme.example";
/// The API token the fake accepts.
pub const TOKEN: &str = "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv";

/// The fake Zendesk.
#[derive(Default)]
pub struct Zendesk;

impl Vendor for Zendesk {
    fn authorized(&self, headers: &HeaderMap, _query: &str) -> bool {
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}/token:{TOKEN}"));
        credentials(headers, "Basic") == Some(expected.as_str())
    }

    fn unauthorized(&self) -> Response {
        reply(401, &[], json!({ "error": "Couldn't authenticate you" }))
    }

    fn throttled(&self, secs: u64) -> Response {
        reply(
            429,
            &[
                ("retry-after", secs.to_string()),
                ("x-rate-limit", "700".into()),
                ("x-rate-limit-remaining", "0".into()),
                ("ratelimit-limit", "700".into()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", secs.to_string()),
            ],
            json!({ "error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded" }),
        )
    }

    fn routes(&self) -> Router<Fake> {
        Router::new()
            .route("/api/v2/users/search.json", get(search_users))
            .route("/api/v2/users.json", post(create_user))
            .route("/api/v2/organizations/{id}", get(show_organization))
            .route("/api/v2/tickets.json", post(create_ticket))
            .route(
                "/api/v2/channels/voice/agents/{agent}/users/{user}/display.json",
                post(display_user),
            )
    }
}

/// `GET /api/v2/users/search.json?query=`: `phone:VALUE` (quotes allowed)
/// matches the stored phone exactly; other text matches name, email or
/// phone partially.
async fn search_users(
    State(fake): State<Fake>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let query = q.get("query").cloned().unwrap_or_default();
    let data = fake.data();
    let users: Vec<Value> = data
        .contacts
        .iter()
        .filter(|u| match query.strip_prefix("phone:") {
            Some(v) => field(u, "phone") == v.trim_matches('"'),
            None => ["name", "email", "phone"]
                .iter()
                .any(|k| !query.is_empty() && field(u, k).contains(query.as_str())),
        })
        .cloned()
        .collect();
    let count = users.len();
    reply(
        200,
        &[],
        json!({ "users": users, "next_page": null, "previous_page": null, "count": count }),
    )
}

/// `GET /api/v2/organizations/{id}.json`.
async fn show_organization(State(fake): State<Fake>, Path(file): Path<String>) -> Response {
    let id = file.trim_end_matches(".json");
    let data = fake.data();
    let org = data
        .extra
        .get("organizations")
        .and_then(|o| o.get(id))
        .cloned();
    match org {
        Some(o) => reply(200, &[], json!({ "organization": o })),
        None => reply(
            404,
            &[],
            json!({ "error": "RecordNotFound", "description": "Not found" }),
        ),
    }
}

fn user_object(id: u64, name: &str, phone: &str, org: Option<u64>) -> Value {
    json!({
        "id": id,
        "url": format!("https://acme.zendesk.com/api/v2/users/{id}.json"),
        "name": name,
        "email": null,
        "phone": phone,
        "shared_phone_number": false,
        "organization_id": org,
        "role": "end-user",
        "active": true,
        "verified": false,
        "created_at": "2025-11-25T10:00:00Z",
    })
}

/// `POST /api/v2/users.json`.
async fn create_user(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let u = &body["user"];
    if field(u, "name").is_empty() {
        return reply(
            422,
            &[],
            json!({ "error": "RecordInvalid", "description": "Record validation errors", "details": { "name": [{ "description": "Name: is too short (minimum one character)" }] } }),
        );
    }
    let mut data = fake.data();
    let id = data.id();
    let user = user_object(id, field(u, "name"), field(u, "phone"), None);
    data.contacts.push(user.clone());
    data.created.push(("users".into(), user.clone()));
    reply(201, &[], json!({ "user": user }))
}

/// `POST /api/v2/tickets.json`: a comment body is required. With an
/// `Idempotency-Key`, a repeat with the same body returns the first
/// ticket (`x-idempotency-lookup: hit`), a different body is refused.
async fn create_ticket(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let t = &body["ticket"];
    if field(&t["comment"], "body").is_empty() {
        return reply(
            422,
            &[],
            json!({ "error": "RecordInvalid", "description": "Record validation errors", "details": { "description": [{ "description": "Description: cannot be blank" }] } }),
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("idempotency:{k}"));
    let mut data = fake.data();
    if let Some(key) = &key
        && let Some(seen) = data.extra.get(key)
    {
        if seen["request"] != body {
            return reply(
                400,
                &[],
                json!({ "error": "IdempotentRequestError", "description": "The request parameters do not match the original request for this idempotency key" }),
            );
        }
        let ticket = seen["ticket"].clone();
        return reply(
            201,
            &[("x-idempotency-lookup", "hit".into())],
            json!({ "ticket": ticket }),
        );
    }
    if let Some(r) = t["requester_id"].as_u64()
        && !data.contacts.iter().any(|u| u["id"].as_u64() == Some(r))
    {
        return reply(
            422,
            &[],
            json!({ "error": "RecordInvalid", "description": "Record validation errors", "details": { "requester": [{ "description": "Requester: is invalid" }] } }),
        );
    }
    let id = data.id();
    let mut ticket = t.clone();
    ticket["id"] = json!(id);
    ticket["description"] = t["comment"]["body"].clone();
    data.created.push(("tickets".into(), ticket.clone()));
    if let Some(key) = key {
        data.extra
            .insert(key, json!({ "request": body, "ticket": ticket }));
    }
    reply(
        201,
        &[("x-idempotency-lookup", "miss".into())],
        json!({ "ticket": ticket }),
    )
}

/// `POST /api/v2/channels/voice/agents/{agent}/users/{user}/display.json`.
async fn display_user(
    State(fake): State<Fake>,
    Path((agent, user)): Path<(u64, String)>,
) -> Response {
    let user = user
        .trim_end_matches(".json")
        .parse::<u64>()
        .unwrap_or_default();
    let mut data = fake.data();
    if !data.contacts.iter().any(|u| u["id"].as_u64() == Some(user)) {
        return reply(
            404,
            &[],
            json!({ "error": "RecordNotFound", "description": "Not found" }),
        );
    }
    data.created.push((
        "displays".into(),
        json!({ "agent_id": agent, "user_id": user }),
    ));
    reply(200, &[], json!({}))
}

impl Saas for Zendesk {
    const PLUGIN: &'static str = "zendesk";
    const SEARCH_PATH: &'static str = "/api/v2/users/search.json";
    const CREDENTIAL_FIELD: &'static str = "api_token";
    const API_HOST: &'static str = "*.zendesk.com";

    fn deep_link(fake: &Fake, id: &str) -> String {
        format!("{}/agent/users/{id}", fake.url())
    }

    fn config(url: &str) -> Value {
        json!({ "base_url": url, "email": EMAIL })
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![("api_token", TOKEN)]
    }

    fn seed(fake: &Fake, first: &str, last: &str, org: &str, phone: &str) -> String {
        let mut data = fake.data();
        let org_id = data.id();
        let id = data.id();
        data.contacts.push(user_object(
            id,
            &format!("{first} {last}"),
            phone,
            Some(org_id),
        ));
        let orgs = data
            .extra
            .entry("organizations".into())
            .or_insert_with(|| json!({}));
        orgs[org_id.to_string()] = json!({ "id": org_id, "name": org });
        id.to_string()
    }

    fn journal(fake: &Fake) -> Vec<Journaled> {
        fake.data()
            .created("tickets")
            .into_iter()
            .map(|t| Journaled {
                contacts: t["requester_id"]
                    .as_u64()
                    .map(|r| r.to_string())
                    .into_iter()
                    .collect(),
                answered: t["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|x| x == "answered_call")),
                duration_secs: None,
                text: format!("{}\n{}", field(&t, "subject"), field(&t["comment"], "body")),
                raw: t.clone(),
            })
            .collect()
    }

    fn created_contacts(fake: &Fake) -> Vec<Value> {
        fake.data().created("users")
    }
}
